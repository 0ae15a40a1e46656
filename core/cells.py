"""Text cells that a spreadsheet shows as text (SPEC 6): never run as a formula when a client opens the file."""

from __future__ import annotations

# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets.
UNSAFE_FIRST = frozenset(("=", "+", "-", "@", "\t", "\r"))


def excel_safe(value: str) -> str:
    """``value`` with a leading ``'`` when a spreadsheet would otherwise run it as a formula."""
    return "'" + value if value[:1] in UNSAFE_FIRST else value
