"""``lcsync template check FILE --client C``: can this client's template read this sample file, and what is wrong?

Pure: reads the sample, writes nothing, touches no database. The command line prints ``render()`` and exits 1 when
``ok`` is false: the file is refused as a whole, a required column is missing, or no row of the sample would import.
Missing group types, custom fields and optional columns, unused file columns and bad rows are reported but do not by
themselves make the template unusable.

Managers are checked within the sample only: a manager that is not in the sample is counted separately (it is fine
when that user is already in the LMS), never reported as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import TemplateConfig
from core.errors import InputFileError
from ingest.reader import DELIMITER_NAMES, MissingColumnsError, UserFile, open_user_file
from ingest.rows import RowError
from ingest.validate import validate

ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 with BOM", "cp1252": "Windows-1252 (Excel's plain CSV)"}


@dataclass
class TemplateReport:
    """What ``check_template`` found. Lists name columns as the template spells them unless said otherwise."""

    path: Path
    template: TemplateConfig
    rejection: str | None = None
    """Why the file is refused as a whole (then most of the rest is empty)."""
    encoding: str | None = None
    delimiter: str | None = None
    header: list[str] = field(default_factory=list)
    required_present: list[str] = field(default_factory=list)
    """Required LMS fields (and the key) whose column is in the file."""
    required_missing: list[str] = field(default_factory=list)
    optional_present: list[str] = field(default_factory=list)
    optional_missing: list[str] = field(default_factory=list)
    """Mapped columns for optional fields that the file lacks."""
    group_types_present: list[str] = field(default_factory=list)
    group_types_missing: list[str] = field(default_factory=list)
    custom_fields_present: list[str] = field(default_factory=list)
    custom_fields_missing: list[str] = field(default_factory=list)
    unused_columns: list[str] = field(default_factory=list)
    """File columns the template does not mention, as written in the file (they are ignored on import)."""
    total_rows: int = 0
    valid_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    """The first ``max_errors`` row errors, by line."""
    error_count: int = 0
    bad_rows: int = 0
    managers_outside: list[str] = field(default_factory=list)
    """Managers named in the sample who are not in it (fine when they are already in the LMS)."""
    max_errors: int = 20

    @property
    def ok(self) -> bool:
        """Whether the template can be used with files like this one."""
        return self.rejection is None and not self.required_missing and self.valid_rows > 0

    def render(self) -> str:
        """The report for a person, on several lines."""
        lines = [f"Template check of {self.path.name}"]
        if self.rejection is not None:
            lines.append(f"  REJECTED: {self.rejection}")
            if self.header:  # the header was read: say what it holds
                lines += _required_lines(self)
                lines.append(_listing("group types present", self.group_types_present))
                if self.group_types_missing:
                    lines.append(_listing("group types missing", self.group_types_missing))
                if self.unused_columns:
                    lines.append(_listing("file columns not used", self.unused_columns))
            lines.append("Result: the template cannot be used with this file.")
            return "\n".join(lines)
        lines.append(f"  encoding: {ENCODING_NAMES.get(self.encoding or '', self.encoding)}")
        lines.append(f"  delimiter: {DELIMITER_NAMES.get(self.delimiter or '', self.delimiter)}")
        lines.append(f"  columns in the file: {len(self.header)}")
        lines += _required_lines(self)
        lines.append(_listing("optional columns present", self.optional_present))
        if self.optional_missing:
            lines.append(
                _listing("optional columns missing (those fields are left as they are)", self.optional_missing)
            )
        lines.append(_listing("group types present", self.group_types_present))
        if self.group_types_missing:
            lines.append(
                _listing("group types missing (memberships of these types are not set)", self.group_types_missing)
            )
        if self.template.custom_fields:
            lines.append(_listing("custom fields present", self.custom_fields_present))
        if self.custom_fields_missing:
            lines.append(_listing("custom fields missing", self.custom_fields_missing))
        if self.unused_columns:
            lines.append(_listing("file columns not used (ignored on import)", self.unused_columns))
        lines.append(
            f"  rows: {self.total_rows} read, {self.valid_rows} would import, {self.bad_rows} would be rejected"
        )
        if self.error_count:
            shown = len(self.errors)
            more = f" (first {shown} shown)" if shown < self.error_count else ""
            lines.append(f"  row errors: {self.error_count}{more}")
            for error in self.errors:
                column = f" {error.column}:" if error.column else ""
                key = f" [{error.key}]" if error.key else ""
                lines.append(f"    line {error.line}{key}{column} {error.reason}")
        if self.managers_outside:
            shown_managers = ", ".join(self.managers_outside[:10])
            more = ", ..." if len(self.managers_outside) > 10 else ""
            lines.append(
                f"  managers not in this sample ({len(self.managers_outside)}; fine if they are already in the LMS): "
                f"{shown_managers}{more}"
            )
        if self.ok:
            lines.append("Result: the template can be used with this file.")
        elif self.required_missing:
            lines.append("Result: the template cannot be used: required columns are missing.")
        else:
            lines.append("Result: the template cannot be used: no row of the sample would import.")
        return "\n".join(lines)


def _listing(label: str, names: list[str]) -> str:
    return f"  {label}: {', '.join(names) if names else '(none)'}"


def _required_lines(report: TemplateReport) -> list[str]:
    lines = [_listing("required columns present", report.required_present)]
    if report.required_missing:
        lines.append(_listing("required columns MISSING", report.required_missing))
    return lines


def check_template(path: Path, template: TemplateConfig, *, max_errors: int = 20) -> TemplateReport:
    """Read the sample at ``path`` with ``template`` as an import would, and report what fits and what does not."""
    report = TemplateReport(path=Path(path), template=template, max_errors=max_errors)
    try:
        user_file = open_user_file(Path(path), template)
    except MissingColumnsError as exc:
        report.rejection = str(exc)
        _describe_columns(report, exc.user_file)
        return report
    except InputFileError as exc:
        report.rejection = str(exc)
        return report
    _describe_columns(report, user_file)
    try:
        _check_rows(report, user_file)
    except InputFileError as exc:  # a quote never closed, found half-way
        report.rejection = str(exc)
    return report


def _describe_columns(report: TemplateReport, user_file: UserFile) -> None:
    template = report.template
    required_fields = {template.key, *template.required}
    report.encoding, report.delimiter, report.header = user_file.encoding, user_file.delimiter, user_file.header
    for name, target in template.columns.items():
        present = name in user_file.columns
        other_spelling = user_file.column_header(target) is not None
        if target in required_fields:
            if present:
                report.required_present.append(name)
            elif not other_spelling:
                report.required_missing.append(name)
        elif present:
            report.optional_present.append(name)
        elif not other_spelling:
            report.optional_missing.append(name)
    for name in template.group_types:
        (report.group_types_present if name in user_file.columns else report.group_types_missing).append(name)
    for name in template.custom_fields:
        (report.custom_fields_present if name in user_file.columns else report.custom_fields_missing).append(name)
    report.unused_columns = list(user_file.unknown_columns)


def _check_rows(report: TemplateReport, user_file: UserFile) -> None:
    validation = validate(user_file, {}, allow_unknown_managers=True)
    report.total_rows = validation.total_rows
    report.valid_rows = validation.valid_count
    report.bad_rows = len(validation.bad_lines)
    report.error_count = len(validation.errors)
    report.errors = validation.errors[: report.max_errors]
    keys = validation.keys_in_file
    outside: dict[str, None] = {}
    for row in validation.valid_rows():
        manager = row.fields.get("manager_id")
        if isinstance(manager, str) and manager not in keys:
            outside[manager] = None
    report.managers_outside = list(outside)
