"""Tables (Markdown, readable on a terminal too) of one run's results, and the facts about the machine."""

from __future__ import annotations

import os
import platform
import ssl
import subprocess
from pathlib import Path
from typing import Any

from bench.servers import REPO, vsftpd_binary, vsftpd_version

NOT_MEASURED = "not yet measured"


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "unknown")
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
    }
    for module in ("pyftpdlib", "OpenSSL"):
        try:
            imported = __import__(module)
            info[module] = getattr(imported, "__ver__", None) or getattr(imported, "__version__", "unknown")
        except ImportError:
            info[module] = "missing"
    binary = vsftpd_binary()
    info["vsftpd"] = vsftpd_version(binary) if binary else "not installed"
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True)
    info["curl"] = " ".join(curl.stdout.split()[:2]) if curl.returncode == 0 else "not installed"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    info["lcsync_commit"] = head.stdout.strip() or "unknown"
    return info


def _med(summary: dict[str, Any] | None, fmt: str = "{:.0f}") -> str:
    if not summary:
        return NOT_MEASURED
    return f"{fmt.format(summary['median'])} [{fmt.format(summary['min'])}, {fmt.format(summary['max'])}]"


def _ratio(summary: dict[str, Any] | None) -> str:
    if not summary:
        return NOT_MEASURED
    return f"{summary['median']:.2f} [{summary['min']:.2f}, {summary['max']:.2f}]"


def transfer_table(rows: list[dict[str, Any]], servers: list[str], subject: str, refs: list[str]) -> str:
    head = ["case", *(f"{s} MB/s" for s in servers), *(f"{subject}/{r}" for r in refs)]
    head += [f"{s} CPU s" for s in servers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tls in (False, True):
        for direction in ("upload", "download"):
            case = {r["server"]: r for r in rows if r["tls"] == tls and r["direction"] == direction}
            cells = [f"{'TLS' if tls else 'plain'} {direction}"]
            cells += [_med(case.get(s, {}).get("mb_per_s")) for s in servers]
            cells += [_ratio(case.get(subject, {}).get(f"ratio_vs_{r}")) for r in refs]
            cells += [_med(case.get(s, {}).get("server_cpu_s"), "{:.2f}") for s in servers]
            lines.append("| " + " | ".join(cells) + " |")
    failures = [
        f"{r['server']} {r['direction']} {'TLS' if r['tls'] else 'plain'}: {e}" for r in rows for e in r["failures"]
    ]
    if failures:
        lines.append("")
        lines += [f"- failed: {f}" for f in failures]
    after = [r for r in rows if r.get("after_cpu_s") and r["after_cpu_s"]["median"] >= 0.05]
    for r in after:
        lines.append(
            f"- {r['server']} went on using {_med(r['after_cpu_s'], '{:.2f}')} CPU s after each "
            f"{'TLS' if r['tls'] else 'plain'} {r['direction']} reply (not counted above)"
        )
    return "\n".join(lines)


def load_table(results: dict[str, Any], servers: list[str], unit: str, subject: str | None = None) -> str:
    head = ["server", f"{unit}/s median [min, max]", f"server CPU ms per {unit} median [min, max]", "errors"]
    if subject:
        head.append(f"{subject}/server")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    subject_rate = (results.get(subject) or {}).get("per_s") if subject else None
    for name in servers:
        entry = results.get(name)
        if not entry:
            cells = [name, NOT_MEASURED, NOT_MEASURED, ""] + ([NOT_MEASURED] if subject else [])
        else:
            errs: dict[str, int] = {}
            for e in entry["errors"]:
                for k, v in e.items():
                    errs[k] = errs.get(k, 0) + v
            cells = [name, _med(entry["per_s"]), _med(entry["cpu_ms_per_op"], "{:.3f}"), str(errs or "-")]
            if subject:
                rate = entry.get("per_s")
                ok = subject_rate and rate and rate["median"]
                cells.append(f"{subject_rate['median'] / rate['median']:.2f}" if ok else NOT_MEASURED)  # type: ignore[index]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flood_table(result: dict[str, Any] | None) -> str:
    head = ["allowed logins from 127.0.0.1", "n", "p50 ms", "p99 ms", "max ms", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase, label in (("quiet", "no flood"), ("flood", "during the refused flood")):
        entry = (result or {}).get(phase)
        if not entry:
            lines.append(f"| {label} | {NOT_MEASURED} | | | | |")
            continue
        lines.append(
            f"| {label} | {entry['n']} | {entry['p50_ms']:.2f} | {entry['p99_ms']:.2f} | "
            f"{entry['max_ms'] or 0:.2f} | {entry['errors'] or '-'} |"
        )
    if result and result.get("flood_runs"):
        runs = result["flood_runs"]
        lines.append("")
        lines.append(
            f"- flood: {result['flood_clients']} concurrent {result['flood_mode']} clients from 127.0.0.2; "
            f"refused attempts/s per repetition: {[round(r['per_s']) for r in runs]}; server CPU ms per attempt "
            f"(allowed logins included): {[round(r['cpu_ms_per_attempt'] or 0, 3) for r in runs]}; "
            f"flood client errors: {[r['errors'] for r in runs]}"
        )
    return "\n".join(lines)
