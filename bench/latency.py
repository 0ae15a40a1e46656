"""Upload-to-result latency (SPEC 9): a 10,000-row User Data file uploaded with curl to an ``on_arrival``
environment of a running ``python -m lcsync serve``, timed until its result file is in the client's results/ folder.

    python -m bench.latency [--rows 10000] [--runs 5]

Each run uploads a different file (the first creates the users, the others change every row), so no run is a
"changes nothing" duplicate. Prints every run and the median; the target is under 5 seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from core.passwords import hash_password

PASSWORD = "bench-latency-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, port: int) -> Path:
    data = {
        "data_dir": str(folder / "data"),
        "server": {"listen": [f"127.0.0.1:{port}"], "passive_ports": "62000-62099", "http": None},
        "environments": {"sandbox": {"database": "sqlite:///{data_dir}/sandbox.db", "import_schedule": "on_arrival"}},
        "clients": {
            "bench": {
                "allowed_ips": ["127.0.0.1"],
                "accounts": {"sandbox": {"username": "bench", "password_hash": hash_password(PASSWORD)}},
                "import": {
                    "file_pattern": "bench_users*.csv",
                    "template": {
                        "key": "employee_id",
                        "columns": {
                            "Employee ID": "employee_id",
                            "First Name": "first_name",
                            "Last Name": "last_name",
                            "Email": "email",
                            "Status": "status",
                        },
                        "group_types": ["Department"],
                        "required": ["employee_id", "first_name", "last_name", "email"],
                    },
                },
            }
        },
    }
    path = folder / "accounts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _user_file(path: Path, rows: int, run: int) -> None:
    lines = ["Employee ID,First Name,Last Name,Email,Status,Department"]
    lines += [f"{i:07d},First{i}r{run},Last{i},user{i}@example.com,Active,Dept{i % 50}" for i in range(rows)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def _wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"lcsync serve exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("lcsync serve did not start listening")


def measure(rows: int, runs: int) -> list[tuple[float, float]]:
    """(upload seconds, upload-to-result seconds) of each run."""
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    folder = Path(tempfile.mkdtemp(prefix="lcsync-latency-"))
    port = _free_port()
    config = _config(folder, port)
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "lcsync", "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    times: list[tuple[float, float]] = []
    try:
        _wait_listening(port, server)
        results = folder / "data" / "sandbox" / "bench" / "results"
        for run in range(runs):
            source = folder / "bench_users.csv"
            _user_file(source, rows, run)
            before = set(os.listdir(results)) if results.exists() else set()
            start = time.monotonic()
            subprocess.run(
                ["curl", "-sS", "--user", f"bench:{PASSWORD}", "-T", str(source), f"ftp://127.0.0.1:{port}/upload/"],
                check=True,
            )
            uploaded = time.monotonic()
            while not (results.exists() and set(os.listdir(results)) - before):
                if time.monotonic() - start > 120:
                    raise SystemExit(f"no result file after 120 s (see {folder / 'serve.log'})")
                time.sleep(0.005)
            done = time.monotonic()
            times.append((uploaded - start, done - start))
            print(f"run {run + 1}: upload {uploaded - start:.3f} s, result file after {done - start:.3f} s", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    shutil.rmtree(folder, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = measure(args.rows, args.runs)
    median = statistics.median(total for _, total in times)
    cpu = platform.processor() or platform.machine()
    print(f"{args.rows} rows, {args.runs} runs on {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"upload-to-result median {median:.3f} s (min {min(t for _, t in times):.3f}, "
        f"max {max(t for _, t in times):.3f}); target < 5 s: {'met' if median < 5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
