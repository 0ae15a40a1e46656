"""accounts.yaml: every kind of mistake gets its own message naming the file, the line and the key path."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from conftest import PASSWORDS, password_hash

from core.config import ListenAddress, config_path, load_config
from core.errors import ConfigError
from core.passwords import verify_password

HASH = password_hash(PASSWORDS[("acme", "sandbox")])
REPOSITORY = Path(__file__).resolve().parent.parent

# Line numbers in the tests below count from here: 1 clients, 2 acme, 3 allowed_ips, 4 accounts, 5 sandbox,
# 6 production.
MINIMAL = dedent(
    """\
    clients:
      acme:
        allowed_ips: ["203.0.113.10"]
        accounts:
          sandbox: {username: acme-sandbox, password_hash: "HASH"}
          production: {username: acme, password_hash: "HASH"}
    """
).replace("HASH", HASH)

# 1 clients, 2 acme, 3 accounts, 4 sandbox, 5 import, 6 file_pattern, 7 template, 8 key, 9 columns, 10-12 columns,
# 13 required.
WITH_IMPORT = dedent(
    """\
    clients:
      acme:
        accounts:
          sandbox: {username: acme-sandbox, password_hash: "HASH"}
        import:
          file_pattern: "acme_users*.csv"
          template:
            key: employee_id
            columns:
              "Employee ID": employee_id
              "First Name": first_name
              "Email": email
            required: [employee_id, first_name, email]
    """
).replace("HASH", HASH)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "accounts.yaml"


@pytest.fixture
def load(config_file: Path) -> Callable[..., Any]:
    """Write ``text`` and load it, with no environment variables unless given."""

    def load(text: str, environ: dict[str, str] | None = None) -> Any:
        config_file.write_text(text, encoding="utf-8")
        return load_config(config_file, environ or {})

    return load


@pytest.fixture
def problems(load: Callable[..., Any], config_file: Path) -> Callable[..., list[str]]:
    """The problems loading ``text`` reports, with the file's path shortened to accounts.yaml."""

    def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
        with pytest.raises(ConfigError) as raised:
            load(text, environ)
        return [problem.replace(str(config_file), "accounts.yaml") for problem in raised.value.problems]

    return problems


# --- unknown and missing keys ------------------------------------------------------------------------------------


def test_unknown_top_level_key_names_its_line(problems: Callable[..., list[str]]) -> None:
    assert problems("timezone: UTC\nretension_days: 3\n" + MINIMAL) == ["accounts.yaml:2: retension_days: unknown key"]


def test_unknown_nested_key_names_its_path(problems: Callable[..., list[str]]) -> None:
    text = "server:\n  listen: ['127.0.0.1:21']\n  ban: {failures: 3, forever: true}\n" + MINIMAL
    assert problems(text) == ["accounts.yaml:3: server.ban.forever: unknown key"]


def test_unknown_key_in_an_account(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace("{username: acme,", "{username: acme, password: hunter2,")
    assert problems(text) == ["accounts.yaml:6: clients.acme.accounts.production.password: unknown key"]


def test_missing_clients(problems: Callable[..., list[str]]) -> None:
    assert problems("timezone: UTC\n") == ["accounts.yaml:1: clients: required key is missing"]


def test_missing_accounts_names_the_client_line(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL + "  globex:\n    name: Globex\n"
    assert problems(text) == ["accounts.yaml:7: clients.globex.accounts: required key is missing"]


def test_an_empty_file_is_refused(problems: Callable[..., list[str]]) -> None:
    assert problems("") == ["accounts.yaml:1: the file must be a mapping with at least a 'clients' key"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "nowhere.yaml", {})
    assert raised.value.problems == [f"{tmp_path / 'nowhere.yaml'}: no such file (set --config or LCSYNC_CONFIG)"]


# --- passwords ---------------------------------------------------------------------------------------------------


def test_plaintext_password_is_refused(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace(
        f'{{username: acme, password_hash: "{HASH}"}}', '{username: acme, password_hash: "Tr0ub4dor&3"}'
    )
    found = problems(text)
    assert found == [
        "accounts.yaml:6: clients.acme.accounts.production.password_hash: looks like a plaintext password, which "
        "must never be stored; put the argon2id hash from `lcsync hash-password` here"
    ]
    assert "Tr0ub4dor" not in found[0]


def test_numeric_password_is_refused_without_being_repeated(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace(f'{{username: acme, password_hash: "{HASH}"}}', "{username: acme, password_hash: 31415926}")
    found = problems(text)
    assert found == [
        "accounts.yaml:6: clients.acme.accounts.production.password_hash: "
        "must be the argon2id hash (a string) from `lcsync hash-password`"
    ]
    assert "31415926" not in found[0]


def test_hash_that_is_not_argon2id_is_refused(problems: Callable[..., list[str]]) -> None:
    bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
    argon2i = "$argon2i$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
    text = MINIMAL.replace(f'acme-sandbox, password_hash: "{HASH}"', f'acme-sandbox, password_hash: "{bcrypt}"')
    text = text.replace(f'acme, password_hash: "{HASH}"', f'acme, password_hash: "{argon2i}"')
    message = "not an argon2id hash; make one with `lcsync hash-password`"
    assert problems(text) == [
        f"accounts.yaml:5: clients.acme.accounts.sandbox.password_hash: {message}",
        f"accounts.yaml:6: clients.acme.accounts.production.password_hash: {message}",
    ]


# --- addresses ---------------------------------------------------------------------------------------------------


def test_bad_ip_in_client_list_names_its_index(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace('["203.0.113.10"]', '["203.0.113.10", "300.1.2.3"]')
    assert problems(text) == [
        "accounts.yaml:3: clients.acme.allowed_ips[1]: '300.1.2.3' is not an IP address or network"
    ]


def test_bad_ip_in_account_list_names_the_account(problems: Callable[..., list[str]]) -> None:
    text = dedent(
        f"""\
        clients:
          acme:
            accounts:
              production:
                username: acme
                password_hash: "{HASH}"
                allowed_ips:
                  - 203.0.113.10
                  - 203.0.113.0/33
        """
    )
    assert problems(text) == [
        "accounts.yaml:9: clients.acme.accounts.production.allowed_ips[1]: '203.0.113.0/33' is not an IP address "
        "or network"
    ]


def test_ipv6_networks_are_accepted(load: Callable[..., Any]) -> None:
    config = load(MINIMAL.replace('["203.0.113.10"]', '["2001:db8::/48", "::1", "198.51.100.0/28"]'))
    assert config.allowed_networks("acme", "sandbox") == [
        ipaddress.ip_network("2001:db8::/48"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("198.51.100.0/28"),
    ]


def test_ipv4_mapped_ipv6_is_normalised_to_ipv4(load: Callable[..., Any]) -> None:
    config = load(MINIMAL.replace('["203.0.113.10"]', '["::ffff:203.0.113.10", "::ffff:10.1.0.0/112"]'))
    assert config.clients["acme"].allowed_ips == [
        ipaddress.ip_network("203.0.113.10/32"),
        ipaddress.ip_network("10.1.0.0/16"),
    ]


def test_account_list_replaces_the_client_list(load: Callable[..., Any]) -> None:
    text = MINIMAL.replace("{username: acme,", '{allowed_ips: ["192.0.2.7"], username: acme,')
    config = load(text)
    assert config.allowed_networks("acme", "production") == [ipaddress.ip_network("192.0.2.7/32")]
    assert config.allowed_networks("acme", "sandbox") == [ipaddress.ip_network("203.0.113.10/32")]


# --- schedules, time, server values ------------------------------------------------------------------------------


def test_bad_cron_expression(problems: Callable[..., list[str]]) -> None:
    assert problems("delivery_schedule: '61 0 * * *'\n" + MINIMAL) == [
        "accounts.yaml:1: delivery_schedule: '61 0 * * *' is not a cron expression (five fields, e.g. '5 0 * * *'): "
        "Error validating expression '61': the last value (61) is higher than the maximum value (59)"
    ]


def test_bad_import_schedule_names_the_environment(problems: Callable[..., list[str]]) -> None:
    text = "environments:\n  sandbox:\n    database: sqlite:///x.db\n    import_schedule: nightly\n" + MINIMAL
    found = problems(text)
    assert found[0].startswith(
        "accounts.yaml:4: environments.sandbox.import_schedule: 'nightly' is not a cron expression (five fields"
    )
    assert len(found) == 1


def test_bad_timezone(problems: Callable[..., list[str]]) -> None:
    assert problems("timezone: Australia/Melbun\n" + MINIMAL) == [
        "accounts.yaml:1: timezone: 'Australia/Melbun' is not a time zone name (example: Australia/Melbourne)"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'60100-60000'", "'60100-60000': ports must satisfy 1024 <= first <= last <= 65535"),
        ("'21-30'", "'21-30': ports must satisfy 1024 <= first <= last <= 65535"),
        ("60000", "60000 is not a port range (example: 60000-60099)"),
    ],
)
def test_bad_passive_port_range(problems: Callable[..., list[str]], value: str, message: str) -> None:
    text = f"server:\n  passive_ports: {value}\n" + MINIMAL
    assert problems(text) == [f"accounts.yaml:2: server.passive_ports: {message}"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp.example.com:21", "'ftp.example.com:21': 'ftp.example.com' is not an IP address"),
        ("127.0.0.1", "'127.0.0.1' is not host:port (examples: 127.0.0.1:2121, [::]:21)"),
        ("127.0.0.1:70000", "'127.0.0.1:70000': port 70000 is out of range"),
        ("::1:21", "'::1:21' is not host:port (examples: 127.0.0.1:2121, [::]:21)"),
    ],
)
def test_bad_listen_address(problems: Callable[..., list[str]], value: str, message: str) -> None:
    text = f"server:\n  listen:\n    - '[::]:2121'\n    - '{value}'\n" + MINIMAL
    assert problems(text) == [f"accounts.yaml:4: server.listen[1]: {message}"]


def test_listen_accepts_ipv6_in_brackets(load: Callable[..., Any]) -> None:
    config = load("server:\n  listen: ['[::]:21', '127.0.0.1:2121']\n" + MINIMAL)
    assert config.server.listen == [ListenAddress(host="::", port=21), ListenAddress(host="127.0.0.1", port=2121)]


def test_bad_size(problems: Callable[..., list[str]]) -> None:
    assert problems("server:\n  max_upload_size: 1 gigabyte\n" + MINIMAL) == [
        "accounts.yaml:2: server.max_upload_size: '1 gigabyte' is not a size (examples: 1GiB, 500MB, 1048576)"
    ]


def test_bad_duration(problems: Callable[..., list[str]]) -> None:
    assert problems("server:\n  ban: {failures: 5, within: 10 minutes}\n" + MINIMAL) == [
        "accounts.yaml:2: server.ban.within: '10 minutes' is not a duration (examples: 30s, 10m, 2h, 1d)"
    ]


def test_sizes_and_durations_are_read(load: Callable[..., Any]) -> None:
    config = load("server:\n  max_upload_size: 500MB\n  ban: {within: 90s, for: 2h}\n" + MINIMAL)
    assert config.server.max_upload_size == 500_000_000
    assert (config.server.ban.within, config.server.ban.for_) == (90.0, 7200.0)


def test_bad_database_url_does_not_repeat_it(problems: Callable[..., list[str]]) -> None:
    text = "environments:\n  production:\n    database: 'postgres//admin:s3cret@db/lcsync'\n" + MINIMAL
    found = problems(text)
    assert found[0] == (
        "accounts.yaml:3: environments.production.database: not a database URL "
        "(examples: sqlite:///{data_dir}/sandbox.db, postgresql+psycopg://user@host/db)"
    )
    assert all("s3cret" not in problem for problem in found)


# --- accounts and names ------------------------------------------------------------------------------------------


def test_unknown_environment_in_an_account(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace("      production: {username: acme,", "      staging: {username: acme,")
    assert problems(text) == [
        "accounts.yaml:6: clients.acme.accounts.staging: unknown environment 'staging' (known: sandbox, production)"
    ]


def test_duplicate_username_ignoring_case(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL + f'  globex:\n    accounts:\n      sandbox: {{username: ACME, password_hash: "{HASH}"}}\n'
    assert problems(text) == [
        "accounts.yaml:9: clients.globex.accounts.sandbox.username: 'ACME' is already the username of acme/production"
    ]


def test_invalid_client_name(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace("  acme:", "  Acme Pty:")
    assert problems(text) == [
        "accounts.yaml:2: clients.Acme Pty: a name must be 1 to 63 lower-case letters, digits, '_' or '-' "
        "(it names folders)"
    ]


def test_reserved_client_name(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL + f'  spool:\n    accounts:\n      sandbox: {{username: spool, password_hash: "{HASH}"}}\n'
    assert problems(text) == ["accounts.yaml:7: clients.spool: this name is reserved for lcsync's internal folders"]


def test_invalid_username(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace("{username: acme,", "{username: 'acme corp',")
    assert problems(text) == [
        "accounts.yaml:6: clients.acme.accounts.production.username: 'acme corp': a username may hold letters, "
        "digits and . _ @ - only"
    ]


def test_every_mistake_is_reported_at_once(problems: Callable[..., list[str]]) -> None:
    text = "timezone: Nowhere/Town\nbogus: 1\n" + MINIMAL.replace('"203.0.113.10"', '"1.2.3.999"')
    assert problems(text) == [
        "accounts.yaml:1: timezone: 'Nowhere/Town' is not a time zone name (example: Australia/Melbourne)",
        "accounts.yaml:2: bogus: unknown key",
        "accounts.yaml:5: clients.acme.allowed_ips[0]: '1.2.3.999' is not an IP address or network",
    ]


# --- YAML itself -------------------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_its_line(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL + "  globex:\n    allowed_ips: [127.0.0.1\n    accounts: {}\n"
    assert problems(text) == ["accounts.yaml:9: not valid YAML: expected ',' or ']', but got ':'"]


def test_duplicate_yaml_key_names_the_second_one(problems: Callable[..., list[str]]) -> None:
    text = MINIMAL.replace("  acme:\n", "  acme:\n    name: Acme\n    name: Acme Pty Ltd\n")
    assert problems(text) == ["accounts.yaml:4: duplicate key 'name': a key may appear only once in a mapping"]


# --- import templates --------------------------------------------------------------------------------------------


def test_template_key_not_mapped(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace("key: employee_id", "key: email_address")
    assert problems(text) == [
        "accounts.yaml:8: clients.acme.import.template.key: 'email_address' is not one of the LMS fields mapped in "
        "columns"
    ]


def test_required_field_not_mapped(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace("required: [employee_id, first_name, email]", "required: [employee_id, last_name]")
    assert problems(text) == [
        "accounts.yaml:13: clients.acme.import.template.required[1]: required field 'last_name' is not mapped by "
        "any column"
    ]


def test_unknown_lms_field_names_the_column(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace('"First Name": first_name', '"First Name": given_name')
    assert problems(text) == [
        "accounts.yaml:11: clients.acme.import.template.columns.First Name: column 'First Name' maps to unknown LMS "
        "field 'given_name' (known: employee_id, username, first_name, last_name, email, status, manager_id, "
        "start_date, end_date, phone, job_title)"
    ]


def test_template_needs_key_columns_and_required(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.split("          key:")[0].split("      template:")[0] + "      template: {mode: delta}\n"
    assert problems(text) == [
        "accounts.yaml:7: clients.acme.import.template.key: required key is missing",
        "accounts.yaml:7: clients.acme.import.template.columns: required key is missing",
        "accounts.yaml:7: clients.acme.import.template.required: required key is missing",
    ]


def test_file_pattern_with_a_folder_is_refused(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace('"acme_users*.csv"', '"upload/acme_users*.csv"')
    assert problems(text) == [
        "accounts.yaml:6: clients.acme.import.file_pattern: 'upload/acme_users*.csv': a file pattern names files in "
        "upload/, without folders or a leading dot"
    ]


def test_file_pattern_with_a_temporary_suffix_is_refused(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace('"acme_users*.csv"', '"acme_users*.part"')
    assert problems(text) == [
        "accounts.yaml:6: clients.acme.import.file_pattern: 'acme_users*.part': names ending .part, .tmp, .filepart "
        "are reserved for temporary files"
    ]


def test_bad_template_mode(problems: Callable[..., list[str]]) -> None:
    text = WITH_IMPORT.replace("        required:", "        mode: partial\n        required:")
    assert problems(text) == [
        "accounts.yaml:13: clients.acme.import.template.mode: 'partial': input should be 'full' or 'delta'"
    ]


# --- data_dir and defaults ---------------------------------------------------------------------------------------


def test_relative_data_dir_is_resolved_against_the_config_folder(
    load: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    config = load("data_dir: ./state/../lcsync-data\n" + MINIMAL)
    assert config.data_dir == tmp_path / "lcsync-data"
    assert config.database_url("sandbox") == f"sqlite:///{tmp_path}/lcsync-data/sandbox.db"


def test_lcsync_data_dir_overrides_the_file(load: Callable[..., Any], tmp_path: Path) -> None:
    config = load("data_dir: ./var\n" + MINIMAL, {"LCSYNC_DATA_DIR": "/srv/lcsync"})
    assert config.data_dir == Path("/srv/lcsync")
    assert config.database_url("production") == "sqlite:////srv/lcsync/production.db"


def test_relative_lcsync_data_dir_is_taken_from_the_current_folder(
    load: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(MINIMAL, {"LCSYNC_DATA_DIR": "data"})
    assert config.data_dir == elsewhere / "data"


def test_defaults_are_those_of_the_spec(load: Callable[..., Any], config_file: Path, tmp_path: Path) -> None:
    config = load(WITH_IMPORT)
    assert config.source == config_file
    assert config.timezone == "Australia/Melbourne"
    assert config.data_dir == tmp_path / "var"
    server = config.server
    assert server.listen == [ListenAddress(host="127.0.0.1", port=2121)]
    assert server.passive_ports == (60000, 60099)
    assert server.masquerade_address is None
    assert (server.tls.cert, server.tls.key) == (None, None)
    assert (server.max_connections, server.max_connections_per_ip) == (256, 16)
    assert (server.ban.failures, server.ban.within, server.ban.for_) == (5, 600.0, 1800.0)
    assert server.max_upload_size == 1024**3
    assert server.http == "127.0.0.1:9121"
    assert config.delivery_schedule == "5 0 * * *"
    assert (config.retention_days, config.archive_days) == (30, 90)
    assert list(config.environments) == ["sandbox", "production"]
    sandbox, production = config.environments["sandbox"], config.environments["production"]
    assert (sandbox.database, sandbox.require_tls, sandbox.import_schedule) == (
        "sqlite:///{data_dir}/sandbox.db",
        False,
        "on_arrival",
    )
    assert (production.database, production.require_tls, production.import_schedule) == (
        "sqlite:///{data_dir}/production.db",
        True,
        "0 0 * * *",
    )
    client = config.clients["acme"]
    assert client.allowed_ips == []
    assert client.reports == []
    assert client.import_ is not None
    template = client.import_.template
    assert template.date_format == "%d/%m/%Y"
    assert (template.mode, template.max_suspend_percent, template.on_row_error) == ("full", 10.0, "skip")
    assert (template.group_types, template.custom_fields, template.delimiter) == ([], [], None)


def test_a_client_without_import_accepts_no_file_names(load: Callable[..., Any]) -> None:
    config = load(MINIMAL)
    assert config.clients["acme"].import_ is None
    assert not config.clients["acme"].is_import_name("acme_users.csv")


# --- where the file is -------------------------------------------------------------------------------------------


def test_config_path_prefers_the_option_then_the_environment() -> None:
    assert config_path("/etc/lcsync/a.yaml", {"LCSYNC_CONFIG": "/x.yaml"}) == Path("/etc/lcsync/a.yaml")
    assert config_path(None, {"LCSYNC_CONFIG": "/x.yaml"}) == Path("/x.yaml")
    assert config_path(None, {}) == Path("accounts.yaml")


def test_the_sample_configuration_loads_and_its_demo_passwords_work() -> None:
    config = load_config(REPOSITORY / "accounts.yaml", {})
    demo = config.clients["demo"]
    assert verify_password(demo.accounts["sandbox"].password_hash, "demo-sandbox-2026")
    assert verify_password(demo.accounts["production"].password_hash, "demo-production-2026")
    assert config.allowed_networks("demo", "production") == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]


def test_the_conftest_configuration_loads(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(), {})
    assert sorted((client, env) for client, env, _ in config.accounts()) == sorted(PASSWORDS)
