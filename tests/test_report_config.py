"""Saved reports in accounts.yaml: every kind of mistake is a configuration error naming the report and its line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from textwrap import dedent

import pytest
from conftest import PASSWORDS, password_hash

from core.config import ReportFilter, load_config, report_file_stem, schedule_cron
from core.errors import ConfigError

HASH = password_hash(PASSWORDS[("acme", "sandbox")])
REPOSITORY = Path(__file__).resolve().parent.parent

# Line numbers below count from here: the report's name is on line 15, source 16, columns 17, filters 18, the first
# filter 19, schedule 20, format 21, environments 22.
BASE = dedent(
    """\
    clients:
      acme:
        accounts:
          sandbox: {username: acme-sandbox, password_hash: "HASH"}
          production: {username: acme, password_hash: "HASH"}
        import:
          file_pattern: "acme_users*.csv"
          template:
            key: employee_id
            columns: {"Employee ID": employee_id, "Email": email}
            group_types: [Department, Location]
            custom_fields: ["Cost Centre"]
            required: [employee_id]
        reports:
          - name: NAME
            source: SOURCE
            columns: COLUMNS
            filters:
              - FILTER
            schedule: SCHEDULE
            format: csv
            environments: ENVIRONMENTS
    """
).replace("HASH", HASH)


def report_yaml(
    *,
    name: str = "compliance_report",
    source: str = "completions",
    columns: str = "[employee_id, course_code]",
    filter: str = "{field: user_status, op: eq, value: active}",
    schedule: str = "daily",
    environments: str = "[production]",
) -> str:
    return (
        BASE.replace("NAME", name)
        .replace("SOURCE", source)
        .replace("COLUMNS", columns)
        .replace("FILTER", filter)
        .replace("SCHEDULE", schedule)
        .replace("ENVIRONMENTS", environments)
    )


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "accounts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    return [problem.replace(str(path), "accounts.yaml") for problem in raised.value.problems]


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "accounts.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, {})


def test_columns_are_canonical_and_the_header_drops_prefixes(tmp_path: Path) -> None:
    config = load(tmp_path, report_yaml(columns='[employee_id, "group:department", "Cost Centre", score]'))
    (report,) = config.clients["acme"].reports  # type: ignore[attr-defined]
    assert report.columns == ["employee_id", "group:Department", "custom:Cost Centre", "score"]
    assert report.header == ["employee_id", "Department", "Cost Centre", "score"]


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("{field: completed_at, op: after, value: 2026-01-31}", date(2026, 1, 31)),
        ("{field: completed_at, op: before, value: today}", "today"),
        ("{field: completed_at, op: before, value: expires_at}", "expires_at"),
        ("{field: completed_at, op: within_days, value: 30}", 30),
        ("{field: user_status, op: eq, value: Active}", "active"),
        ("{field: completion_status, op: in, value: [Completed, expired]}", ["completed", "expired"]),
        ("{field: score, op: eq, value: 87.5}", Decimal("87.5")),
        ("{field: employee_id, op: in, value: [12345, '007']}", ["12345", "007"]),
        ("{field: email, op: is_empty}", None),
        ("{field: 'group:Department', op: contains, value: Sal}", "Sal"),
    ],
)
def test_filter_values_are_typed(tmp_path: Path, filter: str, expected: object) -> None:
    config = load(tmp_path, report_yaml(filter=filter))
    (report,) = config.clients["acme"].reports  # type: ignore[attr-defined]
    (item,) = report.filters
    assert isinstance(item, ReportFilter)
    assert item.value == expected


def test_the_sample_configuration_has_demo_reports() -> None:
    config = load_config(REPOSITORY / "accounts.yaml", {})
    names = {report.name: report for report in config.clients["demo"].reports}
    assert {"compliance_report", "staff_list"} <= set(names)
    assert names["compliance_report"].source == "completions"
    assert names["staff_list"].source == "users"


MISTAKES = [
    (
        {"columns": "[employee_id, bogus]"},
        "accounts.yaml:17: clients.acme.reports[0].columns[1]: report 'compliance_report': unknown column 'bogus' "
        "for source completions (known: ",
    ),
    (
        {"columns": '[employee_id, "group:Team"]'},
        "accounts.yaml:17: clients.acme.reports[0].columns[1]: report 'compliance_report': unknown group type "
        "'Team' in column 'group:Team' (the template's: Department, Location)",
    ),
    (
        {"columns": '[employee_id, "custom:Badge"]'},
        "accounts.yaml:17: clients.acme.reports[0].columns[1]: report 'compliance_report': unknown custom field "
        "'Badge' in column 'custom:Badge' (the template's: Cost Centre)",
    ),
    (
        {"source": "users"},
        "accounts.yaml:17: clients.acme.reports[0].columns[1]: report 'compliance_report': column 'course_code' "
        "exists only in reports of source completions",
    ),
    (
        {"source": "courses"},
        "accounts.yaml:16: clients.acme.reports[0].source: 'courses': input should be 'users' or 'completions'",
    ),
    (
        {"columns": "[employee_id, employee_id]"},
        "accounts.yaml:17: clients.acme.reports[0].columns[1]: report 'compliance_report': column 'employee_id' is "
        "listed twice",
    ),
    (
        {"filter": "{field: user_status, op: like, value: active}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].op: report 'compliance_report': unknown filter "
        "operator 'like' (known: eq, ne, in, not_in, contains, before, after, within_days, is_empty, is_not_empty)",
    ),
    (
        {"filter": "{field: team, op: eq, value: x}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].field: report 'compliance_report': unknown filter "
        "field 'team' for source completions",
    ),
    (
        {"filter": "{field: 'group:Department', op: in, value: Sales}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'group:Department' (in): in takes a list of values, e.g. [a, b]; got 'Sales'",
    ),
    (
        {"filter": "{field: completed_at, op: within_days, value: -3}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'completed_at' (within_days): within_days takes a positive whole number of days; got -3",
    ),
    (
        {"filter": "{field: completed_at, op: before, value: 2026-13-01}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'completed_at' (before): '2026-13-01' is not an ISO date (YYYY-MM-DD)",
    ),
    (
        {"filter": "{field: completed_at, op: after, value: yesterday}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'completed_at' (after): 'yesterday' is not an ISO date (YYYY-MM-DD), 'today' or a date field",
    ),
    (
        {"filter": "{field: email, op: is_empty, value: x}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on 'email' "
        "(is_empty): is_empty takes no value (remove 'value: x')",
    ),
    (
        {"filter": "{field: email, op: eq}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on 'email' "
        "(eq): a value is required (use is_empty to find empty values)",
    ),
    (
        {"filter": "{field: score, op: contains, value: '9'}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].op: report 'compliance_report': contains does not "
        "apply to 'score', a number field (use eq, ne, in, not_in, is_empty, is_not_empty)",
    ),
    (
        {"filter": "{field: email, op: before, value: 2026-01-01}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].op: report 'compliance_report': before does not "
        "apply to 'email', a text field",
    ),
    (
        {"filter": "{field: user_status, op: eq, value: gone}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'user_status' (eq): 'gone' is not a user status (one of active, suspended)",
    ),
    (
        {"filter": "{field: completion_status, op: eq, value: passed}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on "
        "'completion_status' (eq): 'passed' is not a completion status (one of completed, in_progress, "
        "not_started, expired)",
    ),
    (
        {"filter": "{field: score, op: eq, value: high}"},
        "accounts.yaml:19: clients.acme.reports[0].filters[0].value: report 'compliance_report': filter on 'score' "
        "(eq): 'high' is not a number",
    ),
    (
        {"schedule": "weekly:funday"},
        "accounts.yaml:20: clients.acme.reports[0].schedule: 'weekly:funday': weekly takes a day of the week "
        "(mon, tue, wed, thu, fri, sat, sun)",
    ),
    (
        {"schedule": "monthly:31"},
        "accounts.yaml:20: clients.acme.reports[0].schedule: 'monthly:31': not every month has a day 31, so some "
        "months would get no report; use monthly:1",
    ),
    (
        {"schedule": "monthly:0"},
        "accounts.yaml:20: clients.acme.reports[0].schedule: 'monthly:0': monthly takes a day of the month, 1 to 28",
    ),
    (
        {"schedule": "hourly"},
        "accounts.yaml:20: clients.acme.reports[0].schedule: 'hourly' is not a schedule (daily, weekly:mon .. "
        "weekly:sun, monthly:1 .. monthly:28, or a cron expression)",
    ),
    (
        {"schedule": "'0 25 * * *'"},
        "accounts.yaml:20: clients.acme.reports[0].schedule: '0 25 * * *' is not a cron expression",
    ),
    (
        {"name": "'../etc'"},
        "accounts.yaml:15: clients.acme.reports[0].name: '../etc': a report name may not hold '/', '\\' or control "
        "characters (it names files)",
    ),
    (
        {"name": "'***'"},
        "accounts.yaml:15: clients.acme.reports[0].name: '***': a report name needs at least one letter or digit",
    ),
    (
        {"environments": "[staging]"},
        "accounts.yaml:22: clients.acme.reports[0].environments[0]: report 'compliance_report': the client has no "
        "'staging' account to deliver it to (accounts: sandbox, production)",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), MISTAKES, ids=[f"{i}" for i in range(len(MISTAKES))])
def test_each_report_mistake_has_its_message_and_line(tmp_path: Path, edit: dict[str, str], expected: str) -> None:
    found = problems(tmp_path, report_yaml(**edit))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_two_reports_with_one_file_name_are_refused(tmp_path: Path) -> None:
    text = report_yaml()
    second = text[text.index("      - name:") :].replace("compliance_report", "Compliance Report")
    found = problems(tmp_path, text + second)
    assert found == [
        "accounts.yaml:23: clients.acme.reports[1].name: report 'Compliance Report': report 0 has a name that makes "
        "the same file names as 'compliance_report'"
    ]


def test_group_columns_need_an_import_template(tmp_path: Path) -> None:
    text = report_yaml(columns='[employee_id, "group:Department"]')
    start, end = text.index("    import:"), text.index("    reports:")
    found = problems(tmp_path, text[:start] + text[end:])
    assert len(found) == 1
    assert found[0].endswith("unknown group type 'Department' in column 'group:Department' (the template's: none)")


def test_every_mistake_of_a_report_is_listed_at_once(tmp_path: Path) -> None:
    text = report_yaml(columns="[employee_id, bogus]", filter="{field: score, op: like}")
    found = problems(tmp_path, text)
    assert [problem.split(": ")[1] for problem in found] == [
        "clients.acme.reports[0].columns[1]",
        "clients.acme.reports[0].filters[0].op",
    ]


def test_schedules_translate_to_cron() -> None:
    assert schedule_cron("daily") == "0 0 * * *"
    assert schedule_cron("weekly:mon") == "0 0 * * mon"
    assert schedule_cron("monthly:15") == "0 0 15 * *"
    assert schedule_cron("30 6 * * 1-5") == "30 6 * * 1-5"


def test_report_names_are_made_safe_for_file_names() -> None:
    assert report_file_stem("Compliance Report (AU)") == "Compliance_Report_AU"
    assert report_file_stem("staff_list") == "staff_list"
    assert report_file_stem("a/b\\c:d") == "a_b_c_d"
