"""The result file: RFC 4180, UTF-8 with BOM, CRLF, Excel-safe text, atomic publication, never overwritten."""

from __future__ import annotations

import csv
import io
import os
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ingest.results import ResultMerger, ResultWriter, Summary, excel_safe, result_name
from ingest.rows import Outcome, RowError, RowOutcome

WHEN = datetime(2026, 11, 28, 0, 0, 12, tzinfo=ZoneInfo("Australia/Melbourne"))


def read(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_name_is_stem_and_local_time() -> None:
    assert result_name("acme_users.csv", WHEN) == "acme_users_20261128_000012.results.csv"
    assert result_name("acme_users.CSV", WHEN, 2) == "acme_users_20261128_000012_2.results.csv"


def test_rows_in_line_order_then_suspended_then_summary(tmp_path: Path) -> None:
    errors = [
        RowError(3, "Email", "'bob@' is not an email address", "000002"),
        RowError(3, "Start Date", "'31/02/2026' is not a date (dd/mm/yyyy)", "000002"),
        RowError(6, None, "employee_id 000009 appears twice in the file (lines 6 and 7)", "000009"),
        RowError(7, None, "employee_id 000009 appears twice in the file (lines 6 and 7)", "000009"),
    ]
    outcomes = [
        RowOutcome(2, "000001", Outcome.CREATED),
        RowOutcome(4, "000003", Outcome.UPDATED, "last_name, email"),
        RowOutcome(5, "000004", Outcome.REACTIVATED),
        RowOutcome(8, "000010", Outcome.UNCHANGED),
        RowOutcome(None, "000417", Outcome.SUSPENDED, "absent from this full file"),
    ]
    with ResultWriter(tmp_path / "results", "acme_users.csv", WHEN, temp_dir=tmp_path / "spool") as writer:
        merger = ResultMerger(writer, errors)
        for outcome in outcomes:
            merger.outcome(outcome)
        merger.close()
        path = writer.finish(Summary("applied", "", rows_total=7, created=1, updated=1, unchanged=1, reactivated=1,
                                     errors=3, suspended=1))  # fmt: skip

    assert path == tmp_path / "results" / "acme_users_20261128_000012.results.csv"
    rows = read(path)
    assert rows[0] == ["line", "key", "outcome", "reason"]
    assert [row[:3] for row in rows[1:-1]] == [
        ["2", "000001", "created"],
        ["3", "000002", "error"],
        ["4", "000003", "updated"],
        ["5", "000004", "reactivated"],
        ["6", "000009", "error"],
        ["7", "000009", "error"],
        ["8", "000010", "unchanged"],
        ["", "000417", "suspended"],
    ]
    assert rows[2][3] == "Email: 'bob@' is not an email address; Start Date: '31/02/2026' is not a date (dd/mm/yyyy)"
    assert rows[-1][:3] == ["summary", "", "applied"]
    assert rows[-1][3] == ("7 rows read: 1 created, 1 updated, 1 unchanged, 1 reactivated, 3 errors; 1 user suspended")
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == len(rows) and b"\n" not in raw.replace(b"\r\n", b"")
    assert list((tmp_path / "spool").iterdir()) == []  # the temporary file is gone


def test_text_cells_that_could_be_formulas_are_neutralised(tmp_path: Path) -> None:
    with ResultWriter(tmp_path, "acme_users.csv", WHEN) as writer:
        writer.row(2, '=HYPERLINK("http://x")', "error", "+61 400 000 000 is not an email")
        writer.row(3, "-12", "error", "@SUM(A1)")
        writer.row(4, "\tTAB", "error", "\rCR")
        writer.row(5, "0007", "created", 'safe, with a comma and "quotes"\nand a line break')
        path = writer.finish(Summary("rejected", "-note"))
    rows = read(path)
    assert rows[1] == ["2", '\'=HYPERLINK("http://x")', "error", "'+61 400 000 000 is not an email"]
    assert rows[2] == ["3", "'-12", "error", "'@SUM(A1)"]
    assert rows[3] == ["4", "'\tTAB", "error", "'\rCR"]
    assert rows[4] == ["5", "0007", "created", 'safe, with a comma and "quotes"\nand a line break']
    assert rows[5][3] == "'-note"
    # Line numbers are written as numbers, never quoted or prefixed.
    assert b"\r\n2,\"'=HYPERLINK" in path.read_bytes()


def test_excel_safe_leaves_ordinary_text_alone() -> None:
    assert excel_safe("Smith") == "Smith"
    assert excel_safe("") == ""
    assert excel_safe("a=b") == "a=b"


def test_an_existing_result_file_is_never_overwritten(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    existing = results / "acme_users_20261128_000012.results.csv"
    existing.write_bytes(b"downloaded already")
    paths = []
    for _ in range(2):
        with ResultWriter(results, "acme_users.csv", WHEN, temp_dir=tmp_path) as writer:
            paths.append(writer.finish(Summary("duplicate", "nothing changed")))
    assert existing.read_bytes() == b"downloaded already"
    assert [path.name for path in paths] == [
        "acme_users_20261128_000012_2.results.csv",
        "acme_users_20261128_000012_3.results.csv",
    ]


def test_concurrent_writers_of_one_second_get_distinct_names(tmp_path: Path) -> None:
    names: list[str] = []

    def write() -> None:
        with ResultWriter(tmp_path / "results", "acme_users.csv", WHEN, temp_dir=tmp_path) as writer:
            names.append(writer.finish(Summary("applied")).name)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8
    assert sorted(os.listdir(tmp_path / "results")) == sorted(names)


def test_nothing_appears_in_results_until_finished_and_an_abandoned_file_leaves_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with pytest.raises(RuntimeError), ResultWriter(results, "acme_users.csv", WHEN, temp_dir=tmp_path / "tmp") as w:
        for line in range(2, 5000):
            w.row(line, f"{line:06d}", "created")
        assert list(results.iterdir()) == []
        raise RuntimeError("the import failed half way")
    assert list(results.iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_without_a_temp_folder_the_temporary_name_is_hidden(tmp_path: Path) -> None:
    with ResultWriter(tmp_path, "acme_users.csv", WHEN) as writer:
        writer.row(2, "1", "created")
        assert next(iter(os.listdir(tmp_path))).startswith(".")
        writer.finish(Summary("applied"))
    assert os.listdir(tmp_path) == ["acme_users_20261128_000012.results.csv"]


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (Summary("held", "held, nothing applied: the file has no valid row.", rows_total=3, errors=3),
         ["summary", "", "held",
          "3 rows read: 0 created, 0 updated, 0 unchanged, 0 reactivated, 3 errors. "
          "held, nothing applied: the file has no valid row."]),
        (Summary("rejected", "nothing applied: the file is empty"),
         ["summary", "", "rejected", "nothing applied: the file is empty"]),
        (Summary("duplicate", "nothing changed: identical to acme_users.csv, applied as job 3"),
         ["summary", "", "duplicate", "nothing changed: identical to acme_users.csv, applied as job 3"]),
    ],
)  # fmt: skip
def test_held_rejected_and_duplicate_files_say_why(tmp_path: Path, summary: Summary, expected: list[str]) -> None:
    with ResultWriter(tmp_path, "acme_users.csv", WHEN) as writer:
        if summary.status == "held":
            merger = ResultMerger(writer, [RowError(line, "Email", "missing") for line in (2, 3, 4)])
            merger.close()
        path = writer.finish(summary)
    rows = read(path)
    assert rows[-1] == expected
    assert len(rows) == (5 if summary.status == "held" else 2)


def test_a_million_rows_stream_without_holding_them(tmp_path: Path) -> None:
    """Rows go straight to disk: the merger keeps one pending error, the writer none."""
    errors = (RowError(line, "Email", "missing") for line in range(3, 1_000_002, 1000))
    with ResultWriter(tmp_path, "big.csv", WHEN) as writer:
        merger = ResultMerger(writer, errors)
        for line in range(2, 1_000_002):
            if (line - 3) % 1000:
                merger.outcome(RowOutcome(line, str(line), Outcome.CREATED))
        merger.close()
        path = writer.finish(Summary("applied"))
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = [int(row[0]) for row in csv.reader(handle) if row[0].isdigit()]
    assert lines == list(range(2, 1_000_002))


def test_outcomes_a_batch_at_a_time_write_what_one_at_a_time_writes(tmp_path: Path) -> None:
    """The applier hands over a batch of outcomes at once; errors between them still come in line order."""
    errors = [RowError(3, "Email", "missing", "E3"), RowError(7, None, "row has 12 cells"), RowError(12, "Email", "x")]
    outcomes = [
        RowOutcome(line, key, what, reason)
        for line, key, what, reason in [
            (2, "E2", Outcome.CREATED, ""),
            (4, "=cmd", Outcome.UPDATED, "last_name"),
            (5, "E5", Outcome.UNCHANGED, ""),
            (6, "E6", Outcome.CREATED, "+risky reason"),
            (8, "E8", Outcome.UNCHANGED, ""),
            (9, "E9", Outcome.REACTIVATED, ""),
        ]
    ]
    written = []
    for folder, batches in (("one", [[o] for o in outcomes]), ("batches", [outcomes[:3], outcomes[3:]])):
        with ResultWriter(tmp_path / folder, "acme_users.csv", WHEN) as writer:
            merger = ResultMerger(writer, errors)
            for batch in batches:
                if folder == "one":
                    merger.outcome(batch[0])
                else:
                    merger.outcomes([tuple(o) for o in batch])  # type: ignore[misc]  # as the applier hands them
            merger.close()
            written.append(read(writer.finish(Summary("applied"))))
    assert written[0] == written[1]
    assert [row[0] for row in written[1][1:-1]] == ["2", "3", "4", "5", "6", "7", "8", "9", "12"]
    assert written[1][3][1:3] == ["'=cmd", "updated"]
    assert written[1][5][3] == "'+risky reason"
