"""A corpus of realistic and broken HRIS User Data files, built byte for byte.

The files are generated (not committed) so that no tool ever changes their line endings or encoding.
tests/corpus/expected.yaml says what lcsync must make of each one; tests/test_reader.py builds them into a temporary
folder and checks every one. To look at them: ``python tests/corpus/make_corpus.py OUTDIR``.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

HEADER = [
    "Employee ID",
    "First Name",
    "Last Name",
    "Email",
    "Status",
    "Manager ID",
    "Start Date",
    "Department",
    "Location",
    "Position",
    "Cost Centre",
]


def user(
    key: str,
    first: str = "Alex",
    last: str = "Smith",
    email: str | None = None,
    status: str = "Active",
    manager: str = "",
    start: str = "03/02/2020",
    department: str = "Sales",
    location: str = "Melbourne",
    position: str = "Consultant",
    cost_centre: str = "CC100",
) -> list[str]:
    """One row in HEADER's order; the email defaults to one made from the names."""
    email = f"{first}.{last}.{key}@example.com".lower().replace(" ", "") if email is None else email
    return [key, first, last, email, status, manager, start, department, location, position, cost_centre]


def table(
    rows: Sequence[Sequence[str]],
    *,
    header: Sequence[str] = HEADER,
    delimiter: str = ",",
    encoding: str = "utf-8",
    newline: str = "\r\n",
) -> bytes:
    """A CSV file as a program would write it (csv.writer, minimal quoting)."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode(encoding)


def _xlsx() -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append(user("000101"))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


MANAGERS = [
    user("000100", "Margaret", "Whitfield", manager=""),
    user("000101", "Daniel", "Obrien", manager="000100"),
]

FILES: dict[str, Callable[[], bytes | str]] = {
    # --- good files, every flavour ---------------------------------------------------------------------------------
    "excel_cp1252.csv": lambda: table(
        [
            user("000101", "Zoë", "Brontë", email="zoe.bronte@example.com"),
            user("000102", "Seán", "O\u2019Brien", email="sean.obrien@example.com", manager="000101"),
            user("000103", "José", "Muñoz", email="jose.munoz@example.com", department="Café \u2013 Retail"),
        ],
        encoding="cp1252",
    ),
    "utf8_bom.csv": lambda: (
        b"\xef\xbb\xbf" + table([user("000101", "Zoë", "Brontë"), user("000102", "Łukasz", "Żółć")], newline="\n")
    ),
    "semicolons.csv": lambda: table(
        [user("000101", "John", "Smith, Jr", email="john.smith@example.com"), user("000102", "Ann", "Lee")],
        delimiter=";",
    ),
    "tabs.csv": lambda: table([user("000101"), user("000102", department="Sales; Retail, North")], delimiter="\t"),
    "pipes.csv": lambda: table([user("000101"), user("000102", position="Team Lead, Sales")], delimiter="|"),
    "quoted.csv": lambda: table(
        [
            user("000101", "Mary", "Jones", position='Manager, "Special" Projects'),
            user("000102", "Bob", "Lee", location="Level 3\r\n100 Collins St"),
            user("000103", "Ann", "Kim", location="Multi\nline\nvalue"),
            user("000104", "Eve", "Ng", email="bad"),
        ]
    ),
    "cr_only.csv": lambda: table([user("000101"), user("000102"), user("000103", email="")], newline="\r"),
    "header_case_spaces.csv": lambda: table(
        [[*user("000101"), "ignored"], [*user("000102"), "x"]],
        header=["  employee   ID ", "FIRST NAME", "last name", "E-mail", *HEADER[4:], "Notes"],
    ).replace(b"E-mail", b"EMAIL"),
    "leading_zeros_and_spaces.csv": lambda: table(
        [user("  000101 ", "  Ann  ", " Lee", department="  "), user("0000000", cost_centre="")]
    ),
    "blank_lines.csv": lambda: table([user("000101"), [""] * 11, user("000102")]).replace(
        b"000102", b"\r\n\r\n000102", 1
    ),
    "status_variants.csv": lambda: table(
        [
            user(f"0002{i:02d}", status=status)
            for i, status in enumerate(
                [
                    "Active",
                    "INACTIVE",
                    "a",
                    "I",
                    "y",
                    "N",
                    "1",
                    "0",
                    "TRUE",
                    "false",
                    "Terminated",
                    "suspended",
                    "",
                    "Retired",
                    "yes",
                ]
            )
        ]
    ),
    "dates.csv": lambda: table(
        [
            user("000101", start="5/3/2020"),
            user("000102", start="31/02/2026"),
            user("000103", start="2026-01-05"),
            user("000104", start="1/2/26"),
            user("000105", start=""),
            user("000106", start="29/02/2024"),
        ]
    ),
    # --- row errors --------------------------------------------------------------------------------------------
    "ragged.csv": lambda: table([user("000101"), user("000102")[:3], [*user("000103"), "extra"], user("000104")[:6]]),
    "bad_emails.csv": lambda: table(
        [
            user("000101", email="ann@example.com"),
            user("000102", email="bob.example.com"),
            user("000103", email="carl@@example.com"),
            user("000104", email="dee@localhost"),
            user("000105", email="ed smith@example.com"),
            user("000106", email=""),
            user("000107", email="Fay.Wong@Example.COM"),
            user("000108", email="gus@example.com; gus2@example.com"),
        ]
    ),
    "duplicate_keys.csv": lambda: table(
        [user("000101"), user("000102"), user("000101", "Ann"), user("000103"), user("000102", email="bad")]
    ),
    "missing_values.csv": lambda: table([user("", "Nobody"), user("000102", first=""), user("000103", last=" ")]),
    # --- managers ------------------------------------------------------------------------------------------------
    "manager_cycles.csv": lambda: table(
        [
            *MANAGERS,
            user("000201", manager="000202"),
            user("000202", manager="000201"),
            user("000301", manager="000302"),
            user("000302", manager="000303"),
            user("000303", manager="000301"),
            user("000401", manager="000401"),
            user("000501", manager="000101"),
        ]
    ),
    "manager_in_store.csv": lambda: table(
        [
            user("000101", manager="000900"),
            user("000102", manager="000999"),
            user("000103", manager="000104"),
            user("000104", email="broken", manager="000900"),
            user("000105", email="broken2"),
            user("000106", manager="000105"),
            user("000107", manager="000106"),
            user("000108", manager="000950"),
        ]
    ),
    # --- whole-file rejections -----------------------------------------------------------------------------------
    "empty.csv": lambda: b"",
    "whitespace_only.csv": lambda: b"  \r\n\r\n \t\r\n",
    "header_only.csv": lambda: table([]),
    "header_and_blank_lines.csv": lambda: table([]) + b",,,,,,,,,,\r\n\r\n",
    "renamed_xlsx.csv": _xlsx,
    "renamed_xls.csv": lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 8,
    "document.csv": lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "binary.csv": lambda: bytes((i * 37 + 11) % 256 for i in range(4096)),
    "nul_later.csv": lambda: table([user(f"{i:06d}") for i in range(1, 1200)]) + b"000999,\x00,x\r\n",
    "utf16.csv": lambda: "\ufeff" + "\t".join(HEADER) + "\r\n" + "\t".join(user("000101")) + "\r\n",
    "missing_required.csv": lambda: table(
        [[cell for index, cell in enumerate(user("000101")) if index not in (2, 3)]],
        header=[name for index, name in enumerate(HEADER) if index not in (2, 3)],
    ),
    "one_column.csv": lambda: b"Employee data export\r\nAnn Lee 000101\r\nBob Ng 000102\r\n",
    "duplicate_header.csv": lambda: table([[*user("000101"), "x@example.com"]], header=[*HEADER, "EMAIL"]),
    "unclosed_quote.csv": lambda: (
        table([user("000101")])
        + b'000102,"Ann,Lee,ann@example.com,Active,,01/01/2020,Sales,Melbourne,Consultant,CC1\r\n'
        + table([user("000103")], header=[])[2:]
    ),
}


def _encode(content: bytes | str) -> bytes:
    return content if isinstance(content, bytes) else content.encode("utf-16-le")


def build(folder: Path) -> dict[str, Path]:
    """Write every corpus file into ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in FILES.items():
        path = folder / name
        path.write_bytes(_encode(make()))
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in build(Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-out")).items():
        print(f"{path.stat().st_size:8d}  {name}")
