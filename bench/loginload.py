"""Login load from one client process: ``python -m bench.loginload`` (started by the bench, several at once).

Modes:
- ``sessions``: each thread loops connect, USER, PASS (230 expected), PWD, QUIT.
- ``refused``: each thread loops connect from ``--source`` (e.g. 127.0.0.2), USER, PASS, expecting 530, then closes.
- ``hitandrun``: the same, but the client closes right after sending PASS instead of waiting for the (delayed) 530,
  as a flooding attacker would; each PASS sent after a 331 counts.
- ``latency``: one thread, logins one after another (connect to 230), each timed.

Every loop stops at ``--duration`` seconds after ``--start-at`` or after ``--max-per-thread`` iterations, whichever
comes first. The process prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import ftplib
import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: int = 0, error: str | None = None, latency: float | None = None) -> None:
        with self.lock:
            self.ok += ok
            if error is not None:
                self.errors[error] += 1
            if latency is not None:
                self.latencies.append(latency)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, ftplib.Error):
        return f"reply {str(exc)[:3]}"
    return type(exc).__name__


def _session(args: argparse.Namespace, tally: Tally) -> None:
    ftp = ftplib.FTP(timeout=args.timeout)
    try:
        ftp.connect(args.host, args.port, source_address=(args.source, 0) if args.source else None)
        ftp.login(args.user, args.password)
        ftp.pwd()
        ftp.quit()
        tally.add(ok=1)
    except (OSError, EOFError, ftplib.Error) as exc:
        tally.add(error=_error_name(exc))
    finally:
        ftp.close()


def _refused(args: argparse.Namespace, tally: Tally) -> None:
    ftp = ftplib.FTP(timeout=args.timeout)
    try:
        ftp.connect(args.host, args.port, source_address=(args.source, 0) if args.source else None)
        ftp.login(args.user, args.password)
        tally.add(error="login accepted")  # the address should have been refused
    except ftplib.error_perm as exc:
        if str(exc).startswith("530"):
            tally.add(ok=1)
        else:
            tally.add(error=_error_name(exc))
    except (OSError, EOFError, ftplib.Error) as exc:
        tally.add(error=_error_name(exc))
    finally:
        ftp.close()


def _hit_and_run(args: argparse.Namespace, tally: Tally) -> None:
    ftp = ftplib.FTP(timeout=args.timeout)
    try:
        ftp.connect(args.host, args.port, source_address=(args.source, 0) if args.source else None)
        reply = ftp.sendcmd(f"USER {args.user}")
        if not reply.startswith("331"):
            tally.add(error=f"reply {reply[:3]}")
            return
        ftp.putcmd(f"PASS {args.password}")
        tally.add(ok=1)
    except (OSError, EOFError, ftplib.Error) as exc:
        tally.add(error=_error_name(exc))
    finally:
        ftp.close()


def _latency(args: argparse.Namespace, tally: Tally) -> None:
    ftp = ftplib.FTP(timeout=args.timeout)
    started = time.perf_counter()
    try:
        ftp.connect(args.host, args.port, source_address=(args.source, 0) if args.source else None)
        ftp.login(args.user, args.password)
        tally.add(ok=1, latency=time.perf_counter() - started)
        ftp.quit()
    except (OSError, EOFError, ftplib.Error) as exc:
        tally.add(error=_error_name(exc))
    finally:
        ftp.close()


MODES = {"sessions": _session, "refused": _refused, "hitandrun": _hit_and_run, "latency": _latency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--source", default=None, help="local address to bind, e.g. 127.0.0.2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--max-per-thread", type=int, default=100_000)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() at which to begin")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between iterations (latency mode)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    socket.setdefaulttimeout(args.timeout)
    work = MODES[args.mode]
    tally = Tally()
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    begin = time.time()
    deadline = time.monotonic() + args.duration

    def loop() -> None:
        for _ in range(args.max_per_thread):
            if time.monotonic() >= deadline:
                return
            work(args, tally)
            if args.pause:
                time.sleep(args.pause)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(max(1, args.threads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.duration + 4 * args.timeout)
    end = time.time()
    json.dump(
        {"ok": tally.ok, "errors": dict(tally.errors), "latencies": tally.latencies, "begin": begin, "end": end},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
