"""Import benchmark (SPEC 9): a 1,000,000-row User Data file, end to end, on SQLite and PostgreSQL.

    python -m bench.imports [--rows 1000000] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Every measurement runs in a process of its own under ``/usr/bin/time -v`` (peak memory = its maximum resident set
size). End to end means what the import worker does with a file (``ingest.worker.run_pipeline``): the identical-file
check, open and sniff it, validate it against the store, plan the suspensions, apply it in one transaction, and write
and publish the client's result file. Floors measured in the same run: a bare ``csv.reader`` parse of the file, a
bare SQLite ``executemany`` upsert of its rows, a bare PostgreSQL ``COPY`` of the file into a table (SPEC 9's
reference), and a PostgreSQL ``COPY`` of the rows an import writes into lcsync's own tables, formatted beforehand
(what any import of this schema must at least do).

The file: 11 columns (Employee ID, First Name, Last Name, Email, Status, Manager ID, Start Date, Department, Location,
Position, Cost Centre); managers form a 10-ary tree shuffled into random file order, so about half of the rows name
a manager on a later line. The re-import file is the same users with 5% of the rows changed (one field each: a last
name, an email, a department or a cost centre).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADER = [
    "Employee ID", "First Name", "Last Name", "Email", "Status", "Manager ID", "Start Date",
    "Department", "Location", "Position", "Cost Centre",
]  # fmt: skip
TEMPLATE: dict[str, Any] = {
    "key": "employee_id",
    "columns": {
        "Employee ID": "employee_id",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Status": "status",
        "Manager ID": "manager_id",
        "Start Date": "start_date",
    },
    "group_types": ["Department", "Location", "Position"],
    "custom_fields": ["Cost Centre"],
    "required": ["employee_id", "first_name", "last_name", "email"],
    "date_format": "%d/%m/%Y",
    "mode": "full",
}
CLIENT = "benchco"
NOW = "2026-11-28 00:00:00+00"
FIRST = ["Ann", "Bob", "Chloe", "Dev", "Eve", "Farid", "Grace", "Hiro", "Ines", "Jack", "Kiri", "Liam", "Mia", "Noah"]
LAST = ["Smith", "Nguyen", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Singh", "Chen", "Martin", "Kelly"]


# --- the files -----------------------------------------------------------------------------------------------------


def make_files(rows: int, folder: Path, seed: int = 20261128) -> tuple[Path, Path]:
    """Write the all-new file and the 5%-changed re-import file; return their paths."""
    rng = random.Random(seed)
    order = list(range(rows))
    rng.shuffle(order)
    new, changed = folder / "users_new.csv", folder / "users_changed.csv"
    with new.open("w", newline="") as a, changed.open("w", newline="") as b:
        wa, wb = csv.writer(a), csv.writer(b)
        wa.writerow(HEADER)
        wb.writerow(HEADER)
        for h in order:
            first, last = FIRST[h % len(FIRST)], LAST[h // 7 % len(LAST)]
            record = [
                f"{h:07d}",
                first,
                last,
                f"{first}.{last}.{h}@example.com".lower(),
                "Active",
                f"{(h - 1) // 10:07d}" if h else "",
                f"{1 + h % 28:02d}/{1 + h % 12:02d}/{2000 + h % 25}",
                f"Dept {h % 50}",
                f"Location {h % 20}",
                f"Position {h % 200}",
                f"CC{h % 500:03d}",
            ]
            wa.writerow(record)
            if rng.random() < 0.05:
                column = (2, 3, 7, 10)[h % 4]
                record[column] = record[column].replace("@", ".new@") if column == 3 else record[column] + " X"
            wb.writerow(record)
    return new, changed


# --- the steps, each in a process of its own -----------------------------------------------------------------------


def step_csv_parse(path: Path, _url: str) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return sum(1 for _ in reader)


def step_sqlite_upsert(path: Path, url: str) -> int:
    database = url.split("///", 1)[1]
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    columns = ", ".join(f"c{i} TEXT" for i in range(1, 11))
    connection.execute(f"CREATE TABLE IF NOT EXISTS bare (employee_id TEXT PRIMARY KEY, {columns})")
    updates = ", ".join(f"c{i} = excluded.c{i}" for i in range(1, 11))
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        count = 0
        with connection:
            while batch := [row for _, row in zip(range(20_000), reader, strict=False)]:
                connection.executemany(
                    f"INSERT INTO bare VALUES ({', '.join('?' * 11)}) "
                    f"ON CONFLICT (employee_id) DO UPDATE SET {updates}",
                    batch,
                )
                count += len(batch)
    connection.close()
    return count


def step_pg_copy(path: Path, url: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
        columns = ", ".join(f'"{name}" text' for name in HEADER)
        connection.execute("DROP TABLE IF EXISTS bare_copy")
        connection.execute(f"CREATE TABLE bare_copy ({columns})")
        with connection.cursor() as cursor:
            with cursor.copy("COPY bare_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
            count = cursor.rowcount
        connection.commit()
    return int(count)


def step_pg_store_copy(path: Path, url: str) -> tuple[int, float]:
    """A second PostgreSQL floor: COPY of the rows an import of ``path`` writes into lcsync's own tables (a users
    row, three memberships and a custom value per user), formatted beforehand, foreign-key triggers off as the
    applier has them. No parsing, validation, comparison or result file: what any import of this schema must at
    least do, timed from the first COPY to the commit."""
    import psycopg

    users, members, values = io.StringIO(), io.StringIO(), io.StringIO()
    groups: dict[tuple[int, str], int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        count = 0
        for count, cells in enumerate(reader, 1):
            key, first, last, email, _status, _manager, _start, *named, centre = cells
            users.write(f"{count}\t{CLIENT}\t{key}\t{email}\t{first}\t{last}\t{email}\tactive\t{NOW}\t{NOW}\n")
            for type_id, name in enumerate(named, 1):
                group = groups.setdefault((type_id, name), len(groups) + 1)
                members.write(f"{count}\t{type_id}\t{group}\n")
            values.write(f"{count}\t1\t{centre}\n")
    tables = (
        (
            "users",
            "id, client, employee_id, username, first_name, last_name, email, status, created_at, updated_at",
            users,
        ),
        ("memberships", "user_id, group_type_id, group_id", members),
        ("custom_values", "user_id, field_id, value", values),
    )
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
        kinds = ", ".join(f"({i}, '{CLIENT}', 'type {i}')" for i in (1, 2, 3))
        connection.execute(f"INSERT INTO group_types (id, client, name) VALUES {kinds}")
        connection.execute(f"INSERT INTO custom_fields (id, client, name) VALUES (1, '{CLIENT}', 'Cost Centre')")
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO user_groups (id, group_type_id, name) VALUES (%s, %s, %s)",
                [(group, type_id, name) for (type_id, name), group in groups.items()],
            )
        connection.commit()
        started = time.perf_counter()
        connection.execute("SET LOCAL session_replication_role = replica")
        with connection.cursor() as cursor:
            for table, columns, text in tables:
                data = text.getvalue().encode()
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for start in range(0, len(data), 1 << 20):
                        copy.write(data[start : start + (1 << 20)])
        connection.commit()
        return count, time.perf_counter() - started


def step_import(path: Path, url: str) -> tuple[int, float]:
    """The import worker's work on one file (ingest.worker.run_pipeline): the identical-file check (sha256), open
    and sniff, validate against the store, plan the hold, apply, and the client's result file, published.

    Timed from the sha256 to the published result file: the modules and the configuration are loaded before, as
    they are in a running service."""
    from datetime import datetime

    from core.config import Config
    from core.db import Database
    from core.passwords import hash_password
    from ingest.jobs import Environment
    from ingest.results import ResultWriter
    from ingest.worker import _sha256, run_pipeline

    account = {"username": "bench", "password_hash": hash_password("bench-password-2026")}
    config = Config.model_validate(
        {
            "data_dir": str(path.parent),
            "clients": {
                CLIENT: {
                    "name": "Bench Co",
                    "allowed_ips": ["127.0.0.1"],
                    "accounts": {"sandbox": {**account, "username": "bench-s"}, "production": account},
                    "import": {"file_pattern": "users*.csv", "template": TEMPLATE},
                }
            },
        }
    )
    where = Environment(config, "production", Database("bench", url))
    importlib.import_module("ingest.apply")  # loaded before the clock starts, as in a running service

    started = time.perf_counter()
    with ResultWriter(path.parent, path.name, datetime.now(config.zone)) as writer:
        summary = run_pipeline(where, CLIENT, path, writer, job_id=None, released=False, sha256=_sha256(path))
        result = writer.finish(summary)
    took = time.perf_counter() - started
    print(f"{summary.status}: {summary.text()} ({took:.1f} s) -> {result.name}", file=sys.stderr)
    if summary.status != "applied":
        raise RuntimeError(f"the import was not applied: {summary.status}: {summary.text()}")
    return summary.rows_total, took


STEPS = {
    "csv_parse": step_csv_parse,
    "sqlite_upsert": step_sqlite_upsert,
    "pg_copy": step_pg_copy,
    "pg_store_copy": step_pg_store_copy,
    "import": step_import,
}


def run_step(step: str, path: Path, url: str) -> dict[str, Any]:
    """Run ``step`` in a child under /usr/bin/time -v; its rows, seconds and peak memory."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "bench.imports", "--step", step, str(path), url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{step} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_mb"] = int(peak.group(1)) / 1024 if peak else None
    cpu = [float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", done.stderr)]
    result["cpu_seconds"] = sum(cpu)
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def fresh_postgres(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def migrate(url: str) -> None:
    from core.db import Database

    database = Database("bench", url)
    database.upgrade()
    database.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("LCSYNC_BENCH_POSTGRES_URL"), help="admin URL")
    parser.add_argument("--work", type=Path, default=None, help="folder for the files and the SQLite databases")
    parser.add_argument("--step", nargs=3, metavar=("STEP", "FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        step, path, url = args.step
        started = time.perf_counter()
        done = STEPS[step](Path(path), url)
        rows, seconds = done if isinstance(done, tuple) else (done, time.perf_counter() - started)
        print(json.dumps({"rows": rows, "seconds": seconds}))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="lcsync-bench-imports-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"files for {args.rows:,} rows in {work} ...", flush=True)
    new, changed = make_files(args.rows, work)
    results: dict[str, dict[str, Any]] = {}

    def measure(name: str, step: str, path: Path, url: str) -> None:
        results[name] = run_step(step, path, url)
        r = results[name]
        print(
            f"  {name:<30} {r['rows_per_s']:>9,.0f} rows/s  {r['seconds']:6.1f} s wall  "
            f"{r['cpu_seconds']:6.1f} s CPU  peak {r['peak_mb']:5.0f} MB",
            flush=True,
        )

    measure("csv parse (floor)", "csv_parse", new, "")
    bare = work / "bare.db"
    measure("sqlite bare upsert (floor)", "sqlite_upsert", new, f"sqlite:///{bare}")
    db = work / "store.db"
    for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    migrate(f"sqlite:///{db}")
    measure("sqlite import, all new", "import", new, f"sqlite:///{db}")
    measure("sqlite re-import, 5% changed", "import", changed, f"sqlite:///{db}")
    if args.postgres:
        measure("postgres bare COPY", "pg_copy", new, fresh_postgres(args.postgres, "lcsync_bench_copy"))
        store_floor = fresh_postgres(args.postgres, "lcsync_bench_store_copy")
        migrate(store_floor)
        measure("postgres COPY into the store", "pg_store_copy", new, store_floor)
        url = fresh_postgres(args.postgres, "lcsync_bench")
        migrate(url)
        measure("postgres import, all new", "import", new, url)
        measure("postgres re-import, 5% changed", "import", changed, url)
        copy = results["postgres bare COPY"]["rows_per_s"]
        store = results["postgres COPY into the store"]["rows_per_s"]
        for name in ("postgres import, all new", "postgres re-import, 5% changed"):
            ratio = results[name]["rows_per_s"]
            print(f"  {name}: {ratio / copy:.2f} of bare COPY, {ratio / store:.2f} of COPY into the store")
    out = work / "imports.json"
    out.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
    print(f"results in {out}")
    if args.work is None:
        for path in work.iterdir():
            if path != out:
                path.unlink()


if __name__ == "__main__":
    main()
