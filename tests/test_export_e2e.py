"""End to end over FTP: a delivered report is downloaded and deleted by the client with curl, and a report being
written is never visible in reports/ (only complete files ever appear)."""

from __future__ import annotations

import csv
import ftplib
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PASSWORDS, USERNAMES
from reporting import REPORT, open_database, report_config, seed_users
from serving import connect, download, need, run, running

from core.config import Config
from core.layout import Layout
from export.deliver import deliver_staged
from export.generate import generate_report


def sandbox_config(write_config: Callable[..., Path]) -> Config:
    return report_config(write_config, {**REPORT, "environments": ["sandbox"]})


def test_client_downloads_and_deletes_a_delivered_report_with_curl(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    curl = need("curl")
    config = sandbox_config(write_config)
    database = open_database(config, "sandbox")
    try:
        seed_users(database, count=25)
        generated = generate_report(config, "sandbox", database, "acme", "staff_list")
        assert generated.path is not None
        content = generated.path.read_bytes()
        with running(config) as server:
            url = f"ftp://{server.host}:{server.port}/reports/"
            auth = f"{USERNAMES[('acme', 'sandbox')]}:{PASSWORDS[('acme', 'sandbox')]}"
            before = run([curl, "-sS", "--list-only", "-u", auth, url])
            assert before.returncode == 0 and before.stdout.strip() == ""

            deliver_staged(Layout(config.data_dir), "sandbox", database)
            name = generated.path.name
            listed = run([curl, "-sS", "--list-only", "-u", auth, url])
            assert listed.stdout.split() == [name]
            fetched = tmp_path / "fetched.csv"
            got = run([curl, "-sS", "-u", auth, "-o", str(fetched), url + name])
            assert got.returncode == 0, got.stderr
            assert fetched.read_bytes() == content
            assert len(list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))) == 26

            deleted = run([curl, "-sS", "-u", auth, "-Q", f"DELE /reports/{name}", url, "--list-only"])
            assert deleted.returncode == 0, deleted.stderr
            assert deleted.stdout.strip() == ""
            assert not (server.home("sandbox") / "reports" / name).exists()
    finally:
        database.dispose()


def test_a_report_being_written_is_never_visible_in_reports(write_config: Callable[..., Path]) -> None:
    config = sandbox_config(write_config)
    database = open_database(config, "sandbox")
    layout = Layout(config.data_dir)
    seen: dict[str, set[int]] = {}
    errors: list[BaseException] = []
    try:
        seed_users(database, count=40_000)
        with running(config) as server:
            ftp = connect(server, env="sandbox")
            done = threading.Event()

            def produce() -> None:
                try:
                    for _ in range(4):
                        generate_report(config, "sandbox", database, "acme", "staff_list")
                        deliver_staged(layout, "sandbox", database)
                except BaseException as exc:  # reported by the test below
                    errors.append(exc)
                finally:
                    done.set()

            producer = threading.Thread(target=produce)
            producer.start()
            try:
                samples = 0
                while not done.is_set() or samples < 5:
                    samples += 1
                    for name in ftp.nlst("reports"):
                        base = name.rsplit("/", 1)[-1]
                        try:
                            size = ftp.size(f"reports/{base}")
                        except ftplib.error_perm:
                            continue
                        seen.setdefault(base, set()).add(int(size or 0))
                # Any one file downloaded while others were being written is complete.
                any_name = sorted(seen)[0]
                data = download(ftp, f"reports/{any_name}")
                assert data.endswith(b"\r\n")
                assert len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))) == 40_001
            finally:
                producer.join()
                ftp.quit()
        assert not errors, errors
        reports = layout.reports_dir("sandbox", "acme")
        final: dict[str, Any] = {path.name: path.stat().st_size for path in reports.iterdir()}
        assert len(final) == 4
        assert seen, "the listing never showed a report"
        for name, sizes in seen.items():
            assert sizes == {final[name]}, f"{name} was seen at sizes {sizes}, complete it is {final[name]}"
    finally:
        database.dispose()
