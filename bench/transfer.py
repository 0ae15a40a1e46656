"""Upload and download of one large file with curl, plain FTP and explicit FTPS, every server in turn.

curl is the client: it moves over 2 GB/s on loopback with a fraction of a core, so the server is what is measured.
Each timed upload is preceded by writing and deleting a scratch file of the same size (cold-memory pitfall).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench import procs
from bench.servers import Server, Shared
from bench.stats import paired_ratios, summarize

CURL_INSTALL_HINT = "curl is not installed: run `apt-get install -y curl`"


@dataclass
class TransferSample:
    server: str
    direction: str  # upload | download
    tls: bool
    repetition: int
    ok: bool
    seconds: float  # curl's time_total - time_pretransfer: the data moving, up to the server's final reply
    total_seconds: float  # curl's time_total: connect, (TLS,) login, transfer, final reply
    mb_per_s: float  # 10**6 bytes per second over ``seconds``
    server_cpu: float  # CPU seconds of the server's process tree during the transfer
    after_cpu: float  # CPU seconds the server went on using after the reply (lcsync: queueing, import attempt)
    error: str = ""


def _curl(server: Server, direction: str, tls: bool, shared: Shared, timeout: float) -> tuple[bool, float, float, str]:
    """Run one transfer; return (ok, transfer seconds, total seconds, error)."""
    url_path = server.upload_path if direction == "upload" else server.download_path
    argv = ["curl", "--silent", "--show-error", "--fail", "--user", f"{server.user}:{server.password}"]
    argv += ["--write-out", "%{time_pretransfer} %{time_total} %{size_upload} %{size_download}"]
    argv += ["--output", "/dev/null"]
    if tls:
        argv += ["--ssl-reqd", "--insecure"]  # explicit FTPS: AUTH TLS, PBSZ 0, PROT P
    if direction == "upload":
        argv += ["--upload-file", str(shared.source)]
    argv.append(f"ftp://127.0.0.1:{server.port}/{url_path}")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, timeout, timeout, f"curl timed out after {timeout:.0f} s"
    if result.returncode != 0:
        return False, 0.0, 0.0, f"curl exit {result.returncode}: {result.stderr.strip()[:300]}"
    pre, total, uploaded, downloaded = (float(x) for x in result.stdout.split())
    moved = int(uploaded if direction == "upload" else downloaded)
    if moved != shared.size:
        return False, total - pre, total, f"moved {moved} bytes, expected {shared.size}"
    return True, total - pre, total, ""


def measure_one(server: Server, direction: str, tls: bool, shared: Shared, repetition: int) -> TransferSample:
    if direction == "upload":
        procs.write_scratch(shared.workdir, shared.size)
    baseline_children = set(procs.children(server.pid))
    before = server.cpu()
    # Generous: 1 GiB at 20 MB/s. A stalled transfer fails the sample rather than hanging the bench.
    timeout = 60 + shared.size / 20e6
    ok, seconds, total, error = _curl(server, direction, tls, shared, timeout)
    deadline = time.monotonic() + 15
    while set(procs.children(server.pid)) - baseline_children and time.monotonic() < deadline:
        time.sleep(0.02)  # vsftpd: its session processes' CPU is counted once they are reaped
    during = server.cpu() - before
    mark = server.cpu()
    if direction == "upload" and ok:
        server.settle_upload()
    procs.wait_quiet(server.cpu)
    after = server.cpu() - mark
    if direction == "upload":
        server.clean_uploads()
    if ok and not server.alive():
        ok, error = False, "server exited"
    rate = shared.size / seconds / 1e6 if ok and seconds > 0 else 0.0
    return TransferSample(server.name, direction, tls, repetition, ok, seconds, total, rate, during, after, error)


def run(servers: list[Server], shared: Shared, repeat: int, log: Any) -> list[TransferSample]:
    """Every (TLS, direction) case: the servers interleaved within each repetition, the order rotated each time."""
    if shutil.which("curl") is None:
        raise RuntimeError(CURL_INSTALL_HINT)
    samples: list[TransferSample] = []
    for rep in range(repeat):
        for tls in (False, True):
            for direction in ("upload", "download"):
                order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
                for server in order:
                    sample = measure_one(server, direction, tls, shared, rep)
                    samples.append(sample)
                    mode = "TLS" if tls else "plain"
                    status = sample.error
                    if sample.ok:
                        status = f"{sample.mb_per_s:8.0f} MB/s  cpu {sample.server_cpu:5.2f} s"
                    log(f"  transfer rep {rep + 1}/{repeat} {mode:5} {direction:8} {server.name:18} {status}")
    return samples


def summarize_samples(samples: list[TransferSample], subject: str, references: list[str]) -> list[dict[str, Any]]:
    """One row per (TLS, direction, server): medians and spread, and the subject's ratios to each reference."""
    rows: list[dict[str, Any]] = []
    names = list(dict.fromkeys(s.server for s in samples))
    for tls in (False, True):
        for direction in ("upload", "download"):
            case = [s for s in samples if s.tls == tls and s.direction == direction]
            by_rep: dict[str, dict[int, TransferSample]] = {n: {} for n in names}
            for s in case:
                by_rep[s.server][s.repetition] = s
            for name in names:
                good = [s for s in case if s.server == name and s.ok]
                rate = summarize([s.mb_per_s for s in good])
                row: dict[str, Any] = {
                    "tls": tls,
                    "direction": direction,
                    "server": name,
                    "mb_per_s": rate.as_dict() if rate else None,
                    "server_cpu_s": (c.as_dict() if (c := summarize([s.server_cpu for s in good])) else None),
                    "after_cpu_s": (c.as_dict() if (c := summarize([s.after_cpu for s in good])) else None),
                    "failures": [s.error for s in case if s.server == name and not s.ok],
                }
                if name == subject:
                    for ref in references:
                        reps = sorted(set(by_rep[name]) & set(by_rep.get(ref, {})))
                        pairs = [(by_rep[name][r], by_rep[ref][r]) for r in reps]
                        pairs = [(a, b) for a, b in pairs if a.ok and b.ok]
                        ratio = paired_ratios([a.mb_per_s for a, _ in pairs], [b.mb_per_s for _, b in pairs])
                        row[f"ratio_vs_{ref}"] = ratio.as_dict() if ratio else None
                rows.append(row)
    return rows


def sample_dicts(samples: list[TransferSample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
