"""Report benchmark (SPEC 9): a 1,000,000-row report, csv and xlsx, beside bare writers over the same rows.

    python -m bench.reports [--rows 1000000] [--repeat 3]

A SQLite database is seeded with ``--rows`` users (sqlite3 ``executemany`` in one transaction), and a users report of
10 columns (employee_id, username, first_name, last_name, email, status, start_date, end_date, phone, job_title: eight
text columns and two date columns) is measured as follows, each in a process of its own under ``/usr/bin/time -v``
(peak memory = its maximum resident set size):

* ``lcsync csv`` / ``lcsync xlsx``: ``export.generate.generate_report``, exactly what a scheduled run does: the
  query (export.queries over SQLite), the writer (formula neutralisation, ISO dates / date cells), fsync, the final
  name, the report_runs row.
* ``bare csv.writer``: the same rows, fetched into a list first (not timed), written by a bare ``csv.writer``
  ``writerow`` loop (UTF-8, CRLF): the SPEC's reference for csv (target: lcsync csv >= half of it).
* ``bare xlsxwriter``: the same rows in a list, written by xlsxwriter alone in ``constant_memory`` mode with
  ``write_row`` (dates through ``default_date_format``): the reference for xlsx (target: lcsync xlsx >= it).
* ``lcsync csv writer``: export.writers.write_csv alone over the same rows in memory (its own cost, beside the bare
  loop). A list of rows takes the writer's row-by-row path; report_rows' rows take its column path (see
  export.writers), so this is the cost of the general path, not of what ``lcsync csv`` runs.
* ``query only``: the rows of ``report_rows`` consumed without writing, to show where the time goes.

The configurations are interleaved within each repetition (A B C ..., then B C ... A); the table gives the median
rows/s (wall clock) and its range, the median rows per CPU second of the timed section (process time: less
disturbed by other work on a shared machine), and the median peak memory. Absolute figures swing between runs on
these machines: compare within one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

CLIENT = "benchco"
COLUMNS = [
    "employee_id", "username", "first_name", "last_name", "email", "status", "start_date", "end_date", "phone",
    "job_title",
]  # fmt: skip
FIRST = ["Ann", "Bob", "Chloe", "Dev", "Eve", "Farid", "Grace", "Hiro", "Ines", "Jack", "Kiri", "Liam", "Mia", "Noah"]
LAST = ["Smith", "Nguyen", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Singh", "Chen", "Martin", "Kelly"]
TITLES = ["Engineer", "Analyst", "Manager", "Nurse", "Driver", "Clerk", "-Temp-", "=Director"]  # two need a prefix
STEPS = ["lcsync-csv", "bare-csv", "writer-csv", "lcsync-xlsx", "bare-xlsx", "query"]
LABELS = {
    "lcsync-csv": "lcsync csv (query + writer)",
    "bare-csv": "bare csv.writer (rows in memory)",
    "lcsync-xlsx": "lcsync xlsx (query + writer)",
    "bare-xlsx": "bare xlsxwriter constant_memory",
    "writer-csv": "lcsync csv writer (rows in memory)",
    "query": "query only (no writer)",
}


def write_config(folder: Path) -> Path:
    import yaml

    reports = [
        {"name": f"bench_{fmt}", "source": "users", "columns": COLUMNS, "format": fmt, "environments": ["sandbox"]}
        for fmt in ("csv", "xlsx")
    ]
    data = {
        "data_dir": str(folder / "data"),
        "server": {"http": None},
        "environments": {"sandbox": {"database": "sqlite:///{data_dir}/sandbox.db"}},
        "clients": {
            CLIENT: {
                "allowed_ips": ["127.0.0.1"],
                "accounts": {
                    "sandbox": {
                        "username": CLIENT,
                        # a placeholder hash: nobody logs in during this benchmark
                        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$YmVuY2hzYWx0$ZmFrZWhhc2hmb3JiZW5jaG1hcmtz",
                    }
                },
                "reports": reports,
            }
        },
    }
    path = folder / "accounts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def seed(config_path: Path, rows: int) -> None:
    """Migrate the database and insert ``rows`` users with one executemany."""
    from core.config import load_config
    from core.db import Database

    config = load_config(config_path)
    database = Database("sandbox", config.database_url("sandbox"))
    database.upgrade()
    database.dispose()
    path = config.database_url("sandbox").split("///", 1)[1]
    connection = sqlite3.connect(path)
    now = datetime.now(UTC).isoformat(sep=" ")
    start = date(2015, 1, 1)

    def users() -> Any:
        for i in range(rows):
            first, last = FIRST[i % len(FIRST)], LAST[(i // 7) % len(LAST)]
            started = start + timedelta(days=i % 3650)
            ended = (started + timedelta(days=400)).isoformat() if i % 10 == 0 else None
            yield (
                CLIENT, f"{i:07d}", f"{first}.{last}{i}@example.com".lower(), first, last,
                f"{first}.{last}{i}@example.com".lower(), "active" if i % 20 else "suspended", started.isoformat(),
                ended, f"+61 4{i % 100000000:08d}", TITLES[i % len(TITLES)], now, now,
            )  # fmt: skip

    with connection:
        connection.executemany(
            "INSERT INTO users (client, employee_id, username, first_name, last_name, email, status, start_date, "
            "end_date, phone, job_title, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            users(),
        )
    connection.close()


# --- one measurement, in a child process -------------------------------------------------------------------------


def _rows_in_memory(config: Any, report: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    from core.db import Database
    from export.queries import report_rows

    database = Database("sandbox", config.database_url("sandbox"))
    with database.engine.connect() as connection:
        header, rows = report_rows(connection, CLIENT, report, today=date.today())
        materialised = list(rows)
    database.dispose()
    return header, materialised


def step(name: str, config_path: Path, out: Path) -> dict[str, Any]:
    from core.config import load_config
    from core.db import Database
    from export.generate import find_report, generate_report

    config = load_config(config_path)
    fmt = "xlsx" if "xlsx" in name else "csv"
    report = find_report(config, CLIENT, f"bench_{fmt}")
    if name.startswith("lcsync"):
        database = Database("sandbox", config.database_url("sandbox"))
        started, cpu = time.perf_counter(), time.process_time()
        generated = generate_report(config, "sandbox", database, CLIENT, report)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        database.dispose()
        assert generated.path is not None
        generated.path.unlink()
        return {"rows": generated.rows, "seconds": seconds, "cpu": cpu}
    if name == "query":
        from export.queries import report_rows

        database = Database("sandbox", config.database_url("sandbox"))
        started, cpu = time.perf_counter(), time.process_time()
        with database.engine.connect() as connection:
            _, stream = report_rows(connection, CLIENT, report, today=date.today())
            count = sum(1 for _ in stream)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        database.dispose()
        return {"rows": count, "seconds": seconds, "cpu": cpu}
    header, rows = _rows_in_memory(config, report)
    if name == "writer-csv":
        from export.writers import write_csv

        started, cpu = time.perf_counter(), time.process_time()
        with open(out, "wb") as binary:
            write_csv(binary, header, iter(rows), bom=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    elif name == "bare-csv":
        started, cpu = time.perf_counter(), time.process_time()
        with open(out, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(header)
            for row in rows:
                writer.writerow(row)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    else:
        import xlsxwriter

        started, cpu = time.perf_counter(), time.process_time()
        workbook = xlsxwriter.Workbook(str(out), {"constant_memory": True, "default_date_format": "yyyy-mm-dd"})
        sheet = workbook.add_worksheet()
        sheet.write_row(0, 0, header)
        for index, row in enumerate(rows, 1):
            sheet.write_row(index, 0, row)
        workbook.close()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out.unlink(missing_ok=True)
    return {"rows": len(rows), "seconds": seconds, "cpu": cpu}


def run_step(name: str, config_path: Path, folder: Path) -> dict[str, Any]:
    """Run one step in a child under /usr/bin/time -v: its rows, seconds and peak memory (MiB)."""
    out = folder / f"bare.{'xlsx' if 'xlsx' in name else 'csv'}"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "bench.reports", "--step", name, str(config_path), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_mib"] = int(peak.group(1)) / 1024 if peak else float("nan")
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["rows_per_cpu_s"] = result["rows"] / result["cpu"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="users in the report (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, interleaved (default 3)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"which measurements (default {','.join(STEPS)})")
    parser.add_argument("--step", nargs=3, metavar=("STEP", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        name, config_path, out = args.step
        print(json.dumps(step(name, Path(config_path), Path(out))))
        return
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time is not installed: apt-get install -y time")
    steps = [name for name in args.steps.split(",") if name]
    with tempfile.TemporaryDirectory(prefix="lcsync-bench-reports-") as temp:
        folder = Path(temp)
        config_path = write_config(folder)
        started = time.perf_counter()
        seed(config_path, args.rows)
        print(f"seeded {args.rows:,} users in {time.perf_counter() - started:.1f} s", flush=True)
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in steps}
        for repetition in range(args.repeat):
            order = steps[repetition % len(steps) :] + steps[: repetition % len(steps)]
            for name in order:
                result = run_step(name, config_path, folder)
                samples[name].append(result)
                print(f"  rep {repetition + 1} {name:12} {result['rows_per_s']:>10,.0f} rows/s "
                      f"{result['rows_per_cpu_s']:>10,.0f} rows/CPU-s {result['peak_mib']:7.1f} MiB",
                      flush=True)  # fmt: skip
    print()
    print(f"{'':36} {'rows/s (median)':>16} {'range':>21} {'rows/CPU-s':>11} {'peak MiB':>9}")
    medians: dict[str, float] = {}
    cpu_medians: dict[str, float] = {}
    for name in steps:
        rates = [sample["rows_per_s"] for sample in samples[name]]
        medians[name] = statistics.median(rates)
        cpu_medians[name] = statistics.median(sample["rows_per_cpu_s"] for sample in samples[name])
        peak = statistics.median(sample["peak_mib"] for sample in samples[name])
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(f"{LABELS[name]:36} {medians[name]:>16,.0f} {spread:>21} {cpu_medians[name]:>11,.0f} {peak:>9.1f}")
    print()
    if "lcsync-csv" in medians and "bare-csv" in medians:
        ratio = medians["lcsync-csv"] / medians["bare-csv"]
        cpu_ratio = cpu_medians["lcsync-csv"] / cpu_medians["bare-csv"]
        each = ", ".join(
            f"{mine['rows_per_s'] / bare['rows_per_s']:.2f}"
            for mine, bare in zip(samples["lcsync-csv"], samples["bare-csv"], strict=True)
        )
        print(f"csv: lcsync / bare csv.writer = {ratio:.2f} wall ({each} per repetition), {cpu_ratio:.2f} CPU "
              "(target >= 0.5)")  # fmt: skip
    if "lcsync-xlsx" in medians and "bare-xlsx" in medians:
        ratio = medians["lcsync-xlsx"] / medians["bare-xlsx"]
        print(f"xlsx: lcsync / bare xlsxwriter = {ratio:.2f} (target >= 1.0)")
    peaks = [sample["peak_mib"] for name in ("lcsync-csv", "lcsync-xlsx") for sample in samples.get(name, [])]
    if peaks:
        print(f"lcsync peak memory: {max(peaks):.1f} MiB at most (target < 200 MB)")


if __name__ == "__main__":
    main()
