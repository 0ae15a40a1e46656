"""Login benchmarks: sessions per second, CPU per refused login, allowed-login latency during a refused flood.

The clients are ftplib threads in several processes (``bench.loginload``), so one Python client is not the limit.
Server CPU is read from /proc for the server's whole process tree before and after each measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import procs
from bench.servers import REPO, Server
from bench.stats import percentile, summarize

REFUSED_SOURCE = "127.0.0.2"


@dataclass
class LoadResult:
    ok: int
    errors: dict[str, int]
    seconds: float
    server_cpu: float
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def turned_away(self) -> int:
        """Connections the server refused before any login (421: too many connections)."""
        return self.errors.get("reply 421", 0)

    @property
    def cpu_per_op_ms(self) -> float:
        """Server CPU per completed operation; connections turned away with 421 count as operations too."""
        done = self.ok + self.turned_away
        return 1000.0 * self.server_cpu / done if done else float("nan")


def _client_argv(mode: str, server: Server, threads: int, duration: float, start_at: float, **extra: Any) -> list[str]:
    argv = [sys.executable, "-m", "bench.loginload", mode, "--port", str(server.port), "--user", server.user]
    argv += ["--password", server.password, "--threads", str(threads), "--duration", str(duration)]
    argv += ["--start-at", str(start_at)]
    for key, value in extra.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _spawn_clients(argvs: list[list[str]]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
        )
        for argv in argvs
    ]


def _collect(clients: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    results = []
    try:
        for client in clients:
            out, err = client.communicate(timeout=timeout)
            if client.returncode != 0:
                raise RuntimeError(f"load client failed ({client.returncode}): {err.strip()[-500:]}")
            results.append(json.loads(out))
    finally:
        for client in clients:
            procs.stop_group(client)  # type: ignore[arg-type]
    return results


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    server: Server, mode: str, clients: int, processes: int, duration: float, source: str | None = None
) -> LoadResult:
    """``clients`` concurrent ftplib connections in ``processes`` processes, for ``duration`` seconds."""
    procs.wait_quiet(server.cpu, timeout=30)
    baseline_children = set(procs.children(server.pid))
    before = server.cpu()
    start_at = time.time() + 1.0  # let every client process import and get ready before the clock starts
    argvs = [_client_argv(mode, server, n, duration, start_at, source=source) for n in _split(clients, processes)]
    results = _collect(_spawn_clients(argvs), timeout=duration + 180)
    deadline = time.monotonic() + 30
    while set(procs.children(server.pid)) - baseline_children and time.monotonic() < deadline:
        time.sleep(0.05)  # vsftpd's session processes are counted once reaped
    # The server may still be finishing connections the clients have already closed (delayed 530 replies).
    procs.wait_quiet(server.cpu, timeout=30)
    cpu = server.cpu() - before
    errors: dict[str, int] = {}
    for result in results:
        for name, count in result["errors"].items():
            errors[name] = errors.get(name, 0) + count
    seconds = max(r["end"] for r in results) - min(r["begin"] for r in results)
    return LoadResult(sum(r["ok"] for r in results), errors, seconds, cpu)


def warm_up(server: Server) -> None:
    """One full login, so lcsync's verified-password cache holds the bench password (first login pays argon2id)."""
    argv = _client_argv("sessions", server, 1, 30.0, 0.0, max_per_thread=1)
    result = _collect(_spawn_clients([argv]), timeout=120)[0]
    if result["ok"] != 1:
        raise RuntimeError(f"warm-up login to {server.name} failed: {result['errors']}")


def sessions(servers: list[Server], repeat: int, clients: int, processes: int, duration: float, log: Any) -> dict:
    """Sessions per second and server CPU per session, servers interleaved within each repetition."""
    for server in servers:
        warm_up(server)
    raw: dict[str, list[LoadResult]] = {s.name: [] for s in servers}
    for rep in range(repeat):
        order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
        for server in order:
            result = run_load(server, "sessions", clients, processes, duration)
            raw[server.name].append(result)
            log(
                f"  sessions rep {rep + 1}/{repeat} {server.name:18} {result.rate:7.0f}/s "
                f"cpu {result.cpu_per_op_ms:6.3f} ms/session errors {result.errors or '-'}"
            )
    return _load_summary(raw)


def _load_summary(raw: dict[str, list[LoadResult]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, results in raw.items():
        rate = summarize([r.rate for r in results if r.ok])
        cpu = summarize([r.cpu_per_op_ms for r in results if r.ok])
        out[name] = {
            "per_s": rate.as_dict() if rate else None,
            "cpu_ms_per_op": cpu.as_dict() if cpu else None,
            "ok": [r.ok for r in results],
            "turned_away": [r.turned_away for r in results],
            "errors": [r.errors for r in results],
            "server_cpu_s": [r.server_cpu for r in results],
            "seconds": [r.seconds for r in results],
        }
    return out


def refused(
    servers: list[Server], repeat: int, clients: int, processes: int, duration: float, mode: str, log: Any
) -> dict[str, Any]:
    """Server CPU per refused login from 127.0.0.2.

    lcsync: the bench account allows only 127.0.0.1, and the clients send the right password, so any hashing or
    cache use would be a bug. Bare pyftpdlib (no address rules) gets a wrong password instead, as a reference for
    what one failed login costs a pyftpdlib server at all. ``mode`` is ``refused`` (each client waits for the 530)
    or ``hitandrun`` (each client closes right after sending PASS).
    """
    raw: dict[str, list[LoadResult]] = {s.name: [] for s in servers}
    for rep in range(repeat):
        order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
        for server in order:
            target = server if server.name == "lcsync" else _wrong_password(server)
            result = run_load(target, mode, clients, processes, duration, source=REFUSED_SOURCE)
            raw[server.name].append(result)
            log(
                f"  {mode} rep {rep + 1}/{repeat} {server.name:18} {result.ok:6d} refused "
                f"({result.rate:6.1f}/s) cpu {result.cpu_per_op_ms:6.3f} ms each, errors {result.errors or '-'}"
            )
    return _load_summary(raw)


def _wrong_password(server: Server) -> Server:
    clone = Server(**{**server.__dict__})
    clone.password = server.password + "-wrong"
    return clone


def latency(server: Server, count: int, timeout: float) -> LoadResult:
    """``count`` allowed logins from 127.0.0.1, one after another, each timed from connect to the 230 reply."""
    argv = _client_argv("latency", server, 1, timeout, 0.0, max_per_thread=count, pause=0.01)
    result = _collect(_spawn_clients([argv]), timeout=timeout + 120)[0]
    return LoadResult(result["ok"], result["errors"], result["end"] - result["begin"], 0.0, result["latencies"])


def flood(
    server: Server, repeat: int, logins: int, clients: int, processes: int, duration: float, mode: str, log: Any
) -> dict[str, Any]:
    """Allowed-login latency without and with a flood of refused logins from 127.0.0.2, alternating, pooled.

    The flood runs ``duration`` seconds per repetition; the allowed logins are timed inside it, after a 1 s ramp.
    """
    warm_up(server)
    pooled: dict[str, list[float]] = {"quiet": [], "flood": []}
    errors: dict[str, dict[str, int]] = {"quiet": {}, "flood": {}}
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        quiet = latency(server, logins, duration)
        pooled["quiet"] += quiet.latencies
        _merge(errors["quiet"], quiet.errors)
        procs.wait_quiet(server.cpu, timeout=30)
        before = server.cpu()
        start_at = time.time() + 1.0
        argvs = [
            _client_argv(mode, server, n, duration, start_at, source=REFUSED_SOURCE) for n in _split(clients, processes)
        ]
        flooders = _spawn_clients(argvs)
        try:
            time.sleep(max(0.0, start_at - time.time()) + 1.0)  # the flood is running at full strength
            during = latency(server, logins, max(1.0, duration - 3.0))
        finally:
            flood_results = _collect(flooders, timeout=duration + 180)
        procs.wait_quiet(server.cpu, timeout=30)
        cpu = server.cpu() - before
        pooled["flood"] += during.latencies
        _merge(errors["flood"], during.errors)
        attempts = sum(r["ok"] for r in flood_results)
        seconds = max(r["end"] for r in flood_results) - min(r["begin"] for r in flood_results)
        flood_errors: dict[str, int] = {}
        for r in flood_results:
            _merge(flood_errors, r["errors"])
        connections = attempts + flood_errors.get("reply 421", 0)
        run = {"attempts": attempts, "per_s": attempts / seconds if seconds > 0 else 0.0, "errors": flood_errors}
        run["server_cpu_s"] = cpu
        # Per connection from 127.0.0.2 (refused logins and 421s alike); the allowed logins' CPU is included.
        run["cpu_ms_per_attempt"] = 1000 * cpu / connections if connections else None
        runs.append(run)
        log(
            f"  flood rep {rep + 1}/{repeat} quiet p50 {1000 * percentile(quiet.latencies, 50):6.2f} ms, "
            f"flood p50 {1000 * percentile(during.latencies, 50):6.2f} ms p99 "
            f"{1000 * percentile(during.latencies, 99):7.2f} ms ({during.ok}/{logins} ok, {attempts} refused "
            f"attempts at {run['per_s']:.0f}/s, server cpu {cpu:.2f} s, errors {during.errors or '-'} / "
            f"{flood_errors or '-'})"
        )
    out: dict[str, Any] = {"flood_clients": clients, "flood_mode": mode, "flood_runs": runs}
    for phase, values in pooled.items():
        out[phase] = {
            "n": len(values),
            "p50_ms": 1000 * percentile(values, 50),
            "p99_ms": 1000 * percentile(values, 99),
            "max_ms": 1000 * max(values) if values else None,
            "errors": errors[phase],
        }
    return out


def _merge(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value
