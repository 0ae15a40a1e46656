"""``python -m bench``: run the front-door benchmarks, print tables, write JSON into bench/results/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import logins, report, transfer
from bench.servers import STARTERS, VSFTPD_INSTALL_HINT, Server, Shared, start_pyftpdlib, vsftpd_binary
from bench.tlscert import make_self_signed

BENCHMARKS = ("transfer", "sessions", "refused", "flood")
SUBJECT = "lcsync"
RESULTS = Path(__file__).resolve().parent / "results"
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1GiB, 64MiB or 1000000")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)")
    parser.add_argument("--servers", default="lcsync,vsftpd,pyftpdlib", help="comma list of servers to run")
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="transfer file size (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of every measurement (default 5)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent session clients (default 50)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes sharing them (default 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load measurement (default 8)")
    parser.add_argument("--refused-clients", type=int, default=50, help="concurrent refused clients (default 50)")
    parser.add_argument("--flood-clients", type=int, default=50, help="concurrent flood clients (default 50)")
    parser.add_argument(
        "--flood-mode",
        choices=("hitandrun", "refused"),
        default="hitandrun",
        help="flood clients close right after PASS (hitandrun, default) or wait for each 530 (refused)",
    )
    parser.add_argument("--latency-logins", type=int, default=40, help="allowed logins timed per repetition")
    parser.add_argument("--no-threaded-reference", action="store_true", help="skip pyftpdlib ThreadedFTPServer")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, configs)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/<time>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = args.only or list(BENCHMARKS)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STARTERS]
    if unknown:
        print(f"unknown server(s) {unknown}; choose from {sorted(STARTERS)}", file=sys.stderr)
        return 2
    if "vsftpd" in wanted and vsftpd_binary() is None:
        print(VSFTPD_INSTALL_HINT, file=sys.stderr)
        return 2
    if "transfer" in only and shutil.which("curl") is None:
        print(transfer.CURL_INSTALL_HINT, file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, flush=True)

    started = dt.datetime.now().astimezone()
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": report.machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "not_run": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="lcsync-bench-"))
    servers: dict[str, Server] = {}
    try:
        shared = _prepare(workdir, args.size, log)
        needs = {
            "transfer": wanted,
            "sessions": wanted,
            "refused": [s for s in wanted if s in ("lcsync", "pyftpdlib")],  # vsftpd has no per-account address rule
            "flood": [s for s in wanted if s == "lcsync"],
        }
        for name in dict.fromkeys(n for b in only for n in needs[b]):
            try:
                servers[name] = STARTERS[name](shared)
                log(f"started {name} on 127.0.0.1:{servers[name].port} (pid {servers[name].pid})")
            except Exception as exc:  # a server that cannot start is reported, the others still run
                results["not_run"][name] = str(exc)
                log(f"could not start {name}: {exc}")
        threaded_wanted = {"sessions", "refused"} & set(only) and "pyftpdlib" in wanted
        if threaded_wanted and not args.no_threaded_reference and "pyftpdlib-threaded" not in servers:
            try:
                servers["pyftpdlib-threaded"] = start_pyftpdlib(shared, threaded=True)
            except Exception as exc:
                results["not_run"]["pyftpdlib-threaded"] = str(exc)

        def running(names: list[str]) -> list[Server]:
            return [servers[n] for n in names if n in servers]

        refs = [n for n in wanted if n != SUBJECT]
        if "transfer" in only:
            log(f"transfer: {args.size} bytes, {args.repeat} repetitions")
            samples = transfer.run(running(wanted), shared, args.repeat, log)
            results["transfer"] = {
                "size": args.size,
                "samples": transfer.sample_dicts(samples),
                "summary": transfer.summarize_samples(samples, SUBJECT, refs),
            }
        if "sessions" in only:
            names = list(dict.fromkeys([*wanted, "pyftpdlib-threaded"]))
            log(f"sessions: {args.clients} clients in {args.client_procs} processes, {args.duration:.0f} s each")
            results["sessions"] = logins.sessions(
                running(names), args.repeat, args.clients, args.client_procs, args.duration, log
            )
        if "refused" in only:
            for mode, key, n in (("refused", "refused", args.refused_clients), ("hitandrun", "refused_hitandrun", 50)):
                log(f"{key}: {n} clients from {logins.REFUSED_SOURCE}, {args.duration:.0f} s each")
                targets = running(list(dict.fromkeys([*needs["refused"], "pyftpdlib-threaded"])))
                results[key] = logins.refused(targets, args.repeat, n, args.client_procs, args.duration, mode, log)
        if "flood" in only and SUBJECT in servers:
            log(f"flood: {args.flood_clients} {args.flood_mode} clients, {args.latency_logins} allowed logins timed")
            results["flood"] = logins.flood(
                servers[SUBJECT],
                args.repeat,
                args.latency_logins,
                args.flood_clients,
                args.client_procs,
                max(args.duration, 10.0),
                args.flood_mode,
                log,
            )
        results["cpu_accounting"] = {name: server.group.kind for name, server in servers.items()}
        for name, server in servers.items():
            if not server.alive():
                results["not_run"][f"{name} (exited during the run)"] = f"exit status {server.proc.returncode}"
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        results["interrupted"] = True
    except Exception:
        results["error"] = traceback.format_exc()
        log(results["error"])
    finally:
        for server in servers.values():
            server.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    out = args.output or RESULTS / f"{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    _print_tables(results, wanted, only)
    log(f"\nresults: {out}")
    return 1 if "error" in results else 0


def _prepare(workdir: Path, size: int, log: Any) -> Shared:
    os.chmod(workdir, 0o755)
    cert, key = make_self_signed(workdir)
    source = workdir / "source.bin"
    began = time.monotonic()
    block = os.urandom(1 << 20)  # random, so nothing on the way can compress it
    with source.open("wb") as out:
        left = size
        while left > 0:
            left -= out.write(block[: min(left, len(block))])
    log(f"wrote the {size}-byte source file in {time.monotonic() - began:.1f} s ({workdir})")
    return Shared(workdir, cert, key, source, size)


def _print_tables(results: dict[str, Any], wanted: list[str], only: list[str]) -> None:
    print()
    machine = results["machine"]
    print(
        f"machine: {machine['nproc']} cores, {machine['memory_gib']} GiB, kernel {machine['kernel']}, "
        f"Python {machine['python']}, pyftpdlib {machine['pyftpdlib']}, vsftpd {machine['vsftpd']}, "
        f"{machine['openssl']}, {machine['curl']}"
    )
    for name, why in results["not_run"].items():
        print(f"NOT RUN {name}: {why.splitlines()[0] if why else ''}")
    refs = [n for n in wanted if n != SUBJECT]
    if "transfer" in results:
        size = results["transfer"]["size"]
        print(f"\n## Transfers of {size} bytes (MB/s = 10^6 B/s; median [min, max]; ratios per repetition)\n")
        print(report.transfer_table(results["transfer"]["summary"], wanted, SUBJECT, refs))
    if "sessions" in results:
        print("\n## Sessions (connect, USER, PASS, PWD, QUIT)\n")
        names = list(dict.fromkeys([*wanted, "pyftpdlib-threaded"]))
        print(report.load_table(results["sessions"], [n for n in names if n in results["sessions"]] or names,
                                "session", SUBJECT))  # fmt: skip
    for key, how in (("refused", "each client waits for the 530"), ("refused_hitandrun", "clients close after PASS")):
        if key in results:
            print(f"\n## Refused logins from 127.0.0.2, {how}")
            print("(lcsync: address not allowed, right password; pyftpdlib: wrong password; CPU is per connection")
            print("from 127.0.0.2, refused logins and connections turned away with 421 alike)\n")
            print(report.load_table(results[key], list(results[key]) or [SUBJECT], "refused login"))
    if "flood" in only:
        print("\n## Allowed logins during a refused flood (lcsync)\n")
        print(report.flood_table(results.get("flood")))
