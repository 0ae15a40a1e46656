"""The User Data reader: the corpus of real-world and broken files, specific behaviours, and properties."""

from __future__ import annotations

import csv
import importlib.util
import io
import tempfile
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from conftest import template
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import TemplateConfig
from core.errors import InputFileError
from ingest.conversion import human_date_format
from ingest.reader import MissingColumnsError, UserFile, normalize_header, open_user_file
from ingest.rows import RowError, UserRow
from ingest.validate import validate

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))


def _load_corpus_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = _load_corpus_module()


def acme_template(**changes: Any) -> TemplateConfig:
    return TemplateConfig.model_validate({**template(), **changes})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_corpus.build(tmp_path_factory.mktemp("corpus"))


def write(tmp_path: Path, content: bytes | str, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _value(row: UserRow, name: str) -> Any:
    if name.startswith("group:"):
        return row.groups[name[len("group:") :]]
    if name.startswith("custom:"):
        return row.custom[name[len("custom:") :]]
    value = row.fields[name]
    return value.isoformat() if isinstance(value, date) else value


# --- the corpus --------------------------------------------------------------------------------------------------


def test_every_corpus_file_has_an_expectation() -> None:
    assert set(make_corpus.FILES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str, corpus: dict[str, Path]) -> None:
    expected = EXPECTED[name]
    if "reject" in expected:
        with pytest.raises(InputFileError) as refused:
            open_user_file(corpus[name], acme_template())
        assert expected["reject"] in str(refused.value)
        return
    user_file = open_user_file(corpus[name], acme_template())
    assert user_file.encoding == expected.get("encoding", "utf-8")
    assert user_file.delimiter == expected.get("delimiter", ",")
    assert user_file.unknown_columns == expected.get("unknown_columns", [])
    validation = validate(user_file, expected.get("store") or {})
    found = [(error.line, error.column) for error in validation.errors]
    assert found == [(line, column) for line, column, _ in expected["errors"]]
    for error, (_, _, reason) in zip(validation.errors, expected["errors"], strict=True):
        assert reason in error.reason
    rows = list(validation.valid_rows())
    assert [row.line for row in rows] == expected["valid"]
    by_line = {row.line: row for row in rows}
    for line, values in (expected.get("values") or {}).items():
        for name_, value in values.items():
            assert _value(by_line[line], name_) == value, (line, name_)


# --- specific behaviours -----------------------------------------------------------------------------------------

HEADER = "Employee ID,First Name,Last Name,Email"


def test_line_numbers_count_line_breaks_inside_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, f'{HEADER}\n1,"Ann\nMarie",Lee,a@x.com\n\n2,Bob,"Ng\r\nJr",b@x.com\n3,C,D,bad\n')
    records = list(open_user_file(path, acme_template()).records())
    assert [record.line for record in records] == [2, 5, 7]
    assert isinstance(records[0], UserRow) and records[0].fields["first_name"] == "Ann\nMarie"
    assert records[2] == RowError(7, "Email", "'bad' is not an email address", "3")


def test_records_reads_the_file_again_each_time(tmp_path: Path) -> None:
    user_file = open_user_file(write(tmp_path, f"{HEADER}\n1,A,B,a@x.com\n2,C,D,c@x.com\n"), acme_template())
    assert [r.key for r in user_file.records()] == [r.key for r in user_file.records()] == ["1", "2"]


def test_columns_absent_from_the_file_are_absent_from_the_row(tmp_path: Path) -> None:
    user_file = open_user_file(write(tmp_path, f"{HEADER},Department\n1,A,B,a@x.com,\n"), acme_template())
    (row,) = user_file.records()
    assert isinstance(row, UserRow)
    assert row.fields == {"employee_id": "1", "first_name": "A", "last_name": "B", "email": "a@x.com"}
    assert row.groups == {"Department": None}
    assert row.custom == {}
    assert user_file.missing_columns == ["Status", "Manager ID", "Start Date", "Location", "Position", "Cost Centre"]


def test_an_empty_status_reads_as_active(tmp_path: Path) -> None:
    user_file = open_user_file(
        write(tmp_path, f"{HEADER},Status\n1,A,B,a@x.com,\n2,C,D,c@x.com, Inactive \n"), acme_template()
    )
    assert [row.fields["status"] for row in user_file.records()] == ["active", "suspended"]  # type: ignore[union-attr]


def test_a_required_date_must_be_present(tmp_path: Path) -> None:
    template = acme_template(required=["employee_id", "first_name", "last_name", "email", "start_date"])
    path = write(tmp_path, f"{HEADER},Start Date\n1,A,B,a@x.com,\n")
    assert list(open_user_file(path, template).records()) == [RowError(2, "Start Date", "a value is required", "1")]


def test_the_template_delimiter_wins_over_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "Employee ID;First Name;Last Name;Email\n1;A;B;a@x.com\n")
    with pytest.raises(MissingColumnsError, match="read with the comma as delimiter"):
        open_user_file(path, acme_template(delimiter=","))
    assert open_user_file(path, acme_template(delimiter=";")).delimiter == ";"


def test_the_header_decides_the_delimiter_when_values_hold_others(tmp_path: Path) -> None:
    rows = "\n".join(f"{i};Smith, John;Lee, Ann;a{i}@x.com" for i in range(5))
    path = write(tmp_path, f"Employee ID;First Name;Last Name;Email\n{rows}\n")
    assert open_user_file(path, acme_template()).delimiter == ";"


def test_one_invalid_utf8_byte_anywhere_makes_the_whole_file_windows_1252(tmp_path: Path) -> None:
    body = "".join(f"{i},Zoë,Lee,z{i}@x.com\r\n" for i in range(5000)).encode("utf-8")
    path = write(tmp_path, HEADER.encode() + b"\r\n" + body + b"9999,O\x92Brien,Lee,o@x.com\r\n")
    user_file = open_user_file(path, acme_template())
    assert user_file.encoding == "cp1252"
    rows = list(user_file.records())
    assert rows[0].fields["first_name"] == "ZoÃ«"  # type: ignore[union-attr]  # the file is decided as a whole
    assert rows[-1].fields["first_name"] == "O\u2019Brien"  # type: ignore[union-attr]


def test_bytes_undefined_in_windows_1252_still_decode(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER.encode() + b"\r\n1,A\x81,B\x9d,a@x.com\r\n")
    (row,) = open_user_file(path, acme_template()).records()
    assert row.fields["first_name"] == "A\x81"  # type: ignore[union-attr]


def test_a_template_may_spell_one_field_two_ways_but_a_file_must_use_one(tmp_path: Path) -> None:
    columns = {**template()["columns"], "Staff Number": "employee_id"}
    path = write(tmp_path, "Staff Number,First Name,Last Name,Email\n1,A,B,a@x.com\n")
    assert open_user_file(path, acme_template(columns=columns)).key_header == "Staff Number"
    both = write(tmp_path, "Staff Number,Employee ID,First Name,Last Name,Email\n1,1,A,B,a@x.com\n", "both.csv")
    with pytest.raises(InputFileError, match="'Employee ID' and 'Staff Number' both hold employee_id"):
        open_user_file(both, acme_template(columns=columns))


def test_a_missing_file_is_an_input_file_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot be read"):
        open_user_file(tmp_path / "gone.csv", acme_template())


def test_header_names_compare_without_case_spaces_or_bom() -> None:
    assert normalize_header("\ufeff  Employee \t  ID ") == normalize_header("employee id") == "employee id"


def test_date_formats_read_as_people_write_them() -> None:
    assert human_date_format("%d/%m/%Y") == "dd/mm/yyyy"
    assert human_date_format("%Y-%m-%d") == "yyyy-mm-dd"
    assert human_date_format("%d %b %y") == "dd mmm yy"


def test_other_date_formats(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER},Start Date\n1,A,B,a@x.com,2024-02-29\n2,A,B,b@x.com,29/02/2024\n")
    records = list(open_user_file(path, acme_template(date_format="%Y-%m-%d")).records())
    assert records[0].fields["start_date"] == date(2024, 2, 29)  # type: ignore[union-attr]
    assert records[1] == RowError(3, "Start Date", "'29/02/2024' is not a date in the format yyyy-mm-dd", "2")


def test_links_agree_with_records(corpus: dict[str, Path]) -> None:
    user_file = open_user_file(corpus["manager_in_store.csv"], acme_template())
    scan = user_file.links()
    pairs = list(scan)
    rows = [record for record in user_file.records() if isinstance(record, UserRow)]
    assert pairs == [(row.key, row.fields["manager_id"]) for row in rows]
    assert scan.errors == [record for record in user_file.records() if isinstance(record, RowError)]
    assert scan.good == len(rows)


# --- properties --------------------------------------------------------------------------------------------------

PLAIN = TemplateConfig(
    key="employee_id",
    columns={"Employee ID": "employee_id", "First Name": "first_name", "Job Title": "job_title"},
    group_types=["Department"],
    custom_fields=["Notes"],
    required=["employee_id"],
)
PLAIN_HEADER = ["Employee ID", "First Name", "Job Title", "Department", "Notes"]
CELL = st.text(
    alphabet=st.one_of(
        st.sampled_from(",;|\t\"\r\n '=@"),
        st.characters(blacklist_categories=("Cs", "Cc")),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(CELL, min_size=5, max_size=5), min_size=1, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
    newline=st.sampled_from(["\r\n", "\n", "\r"]),
    quote_all=st.booleans(),
)
def test_any_table_the_reader_accepts_round_trips(
    rows: list[list[str]], delimiter: str, encoding: str, newline: str, quote_all: bool
) -> None:
    text = io.StringIO()
    # csv.writer quotes only the line breaks of its own line terminator (a value "a\rb" goes out bare in a CRLF
    # file), and a reader must take a bare line break for the end of a record: quote everything then.
    breaks = any("\r" in cell or "\n" in cell for row in rows for cell in row)
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_ALL if quote_all or breaks else csv.QUOTE_MINIMAL
    writer = csv.writer(text, delimiter=delimiter, lineterminator=newline, quoting=quoting)
    writer.writerow(PLAIN_HEADER)
    writer.writerows(rows)
    try:
        content = text.getvalue().encode(encoding)
    except UnicodeEncodeError:
        return  # not every character exists in Windows-1252
    if encoding == "cp1252" and not content.isascii():
        try:
            content.decode("utf-8")
            return  # Windows-1252 bytes that happen to be valid UTF-8 are read as UTF-8, as documented
        except UnicodeDecodeError:
            pass
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.csv"
        path.write_bytes(content)
        user_file = open_user_file(path, PLAIN) if _has_data(rows) else None
        if user_file is None:
            with pytest.raises(InputFileError):
                open_user_file(path, PLAIN)
            return
        assert user_file.delimiter == delimiter
        records = list(user_file.records())
    expected = [row for row in rows if any(cell.strip() for cell in row)]
    by_line: dict[int, list[UserRow | RowError]] = {}
    for found in records:
        by_line.setdefault(found.line, []).append(found)
    assert len(by_line) == len(expected)
    for (record, *_), row in zip(by_line.values(), expected, strict=True):
        cells = [cell.strip() or None for cell in row]
        if cells[0] is None:
            assert isinstance(record, RowError) and record.column == "Employee ID"
            continue
        assert isinstance(record, UserRow)
        assert record.key == cells[0]
        assert record.fields == {"employee_id": cells[0], "first_name": cells[1], "job_title": cells[2]}
        assert record.groups == {"Department": cells[3]}
        assert record.custom == {"Notes": cells[4]}


def _has_data(rows: list[list[str]]) -> bool:
    return any(cell.strip() for row in rows for cell in row)


CSV_PIECES = st.sampled_from(
    [
        b",",
        b";",
        b"\t",
        b"|",
        b'"',
        b'""',
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"\xef\xbb\xbf",
        b"\x92",
        b"\xc3",
        b"\xe2\x80",
        b"Employee ID",
        b"First Name",
        b"Last Name",
        b"Email",
        b"Manager ID",
        b"Start Date",
        b"Status",
        b"000123",
        b"a@b.co",
        b"31/02/2026",
        b"01/02/2026",
        b"Active",
        b"PK\x03\x04",
        b" ",
        b"x",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.lists(CSV_PIECES, max_size=80).map(b"".join),
        st.lists(CSV_PIECES, max_size=60).map(
            lambda pieces: b"Employee ID,First Name,Last Name,Email\r\n" + b"".join(pieces)
        ),
    )
)
def test_no_bytes_crash_the_reader(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.csv"
        path.write_bytes(content)
        try:
            user_file = open_user_file(path, acme_template())
            records = list(user_file.records())
            validation = validate(user_file, {})
        except InputFileError:
            return
    assert all(isinstance(record, UserRow | RowError) for record in records)
    assert validation.total_rows == len({record.line for record in records})
    assert isinstance(user_file, UserFile)


@pytest.mark.parametrize("ending", ["\r\n", "\n", "\r"])
def test_a_file_without_quotes_reads_as_csv_reader_reads_it(tmp_path: Path, ending: str) -> None:
    """Without a quote character the reader splits lines itself (twice as fast); it must see what csv.reader sees:
    blank lines, lines of spaces, short and long rows, a delimiter at the end, a last line without a line break."""
    lines = [
        "Employee ID;First Name;Last Name;Email",
        "001;Ann;Lee;ann@example.com",
        "",
        "   ",
        "002;Bob;;bob@example.com;",
        "003;Cy",
        ";;;",
        "004; Dee ;Ng;dee@example.com",
    ]
    path = tmp_path / "users.csv"
    path.write_text(ending.join(lines), encoding="utf-8", newline="")
    user_file = open_user_file(path, TemplateConfig(**{**template(), "required": ["employee_id"]}))
    assert not user_file.quoted
    with user_file._reader() as reader:
        split = [(reader.line_num, cells) for cells in reader]
    with open(path, encoding="utf-8", newline="") as stream:
        expected = csv.reader(stream, delimiter=";")
        next(expected)
        assert split == [(expected.line_num, cells) for cells in expected]
    records = [(r.line, r.key) if isinstance(r, UserRow) else (r.line, r.reason) for r in user_file.records()]
    assert records[0] == (2, "001")
    assert (5, "row has 5 cells, the header has 4 (is there a value with an unquoted semicolon in it? quote it)") in (
        records
    )
    assert (8, "004") in records
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(ending.join([*lines, '005;"Eve";Li;eve@example.com']), encoding="utf-8", newline="")
    assert open_user_file(quoted, TemplateConfig(**{**template(), "required": ["employee_id"]})).quoted
