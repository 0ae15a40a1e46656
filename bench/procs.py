"""Processes: CPU seconds of a server's process tree, waiting for a port, stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_TICK = float(os.sysconf("SC_CLK_TCK"))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name in parentheses may hold spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _own_cpu(pid: int) -> float:
    """utime+stime+cutime+cstime of one process: itself, all its threads and its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After "pid (comm) ": state is field 0, so utime/stime/cutime/cstime are fields 11..14.
    return sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid``, its threads, its reaped children and its live descendants."""
    total = _own_cpu(pid)
    for child in children(pid):
        total += tree_cpu(child)
    return total


def wait_children_gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait until a forking server (vsftpd) has reaped its session processes, so their CPU is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not children(pid):
            return True
        time.sleep(0.02)
    return False


def wait_quiet(cpu: Callable[[], float], window: float = 0.5, threshold: float = 0.02, timeout: float = 120.0) -> float:
    """Wait until the server tree uses under ``threshold`` CPU seconds in ``window``; return the CPU spent waiting.

    lcsync does work after an upload completes (queueing, the import worker rejecting the bench's binary file); that
    work must not run while the next configuration is being measured.
    """
    start = cpu()
    deadline = time.monotonic() + timeout
    previous = start
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu()
        if now - previous < threshold:
            return now - start
        previous = now
    return cpu() - start


class CpuGroup:
    """A cgroup of its own for one server, so the CPU of every process it ever ran is counted, exited ones included.

    /proc/PID/stat's cutime misses vsftpd's session processes: with ``isolate=YES`` each session is the init of a
    PID namespace, and its helper processes are reaped outside the listener's tree when it exits. The cgroup's own
    counter (cgroup v2 ``cpu.stat`` usage_usec, or v1 ``cpuacct.usage``) has no such gap. Without a writable cgroup
    file system the bench falls back to /proc and says so.
    """

    _ROOTS = (("/sys/fs/cgroup", "v2"), ("/sys/fs/cgroup/unified", "v2"), ("/sys/fs/cgroup/cpuacct", "v1"))

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.kind = "proc"
        for root, kind in self._ROOTS:
            base = Path(root)
            marker = base / ("cgroup.controllers" if kind == "v2" else "cpuacct.usage")
            if not marker.exists() or not os.access(base, os.W_OK):
                continue
            path = base / f"lcsync-bench-{os.getpid()}-{name}"
            try:
                path.mkdir(exist_ok=True)
            except OSError:
                continue
            self.path, self.kind = path, kind
            return

    def join(self) -> None:
        """Move the calling process into the group (used as a Popen preexec_fn, between fork and exec)."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def cpu(self) -> float | None:
        if self.path is None:
            return None
        if self.kind == "v1":
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
        return None

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll until ``host:port`` accepts a connection; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0) as sock:
            # Read the greeting, so a server that accepts but is not ready yet is not counted as up.
            sock.settimeout(5.0)
            if sock.recv(1024).startswith(b"220"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on {host}:{port} within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray children of a dead leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def write_scratch(directory: Path, size: int) -> None:
    """Write then delete a file of ``size`` bytes: the VM hands freed memory back to the host, and the first write
    into cold memory runs several times slower, so every upload starts from warm pages (BENCH-NOTES pitfall)."""
    path = directory / "scratch.bin"
    block = b"\0" * (1 << 20)
    with path.open("wb") as out:
        left = size
        while left > 0:
            left -= out.write(block[: min(left, len(block))])
    path.unlink()
