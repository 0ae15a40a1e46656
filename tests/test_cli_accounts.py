"""lcsync accounts add / passwd / list: accounts.yaml edited in place as an operator would expect."""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from click.testing import Result
from conftest import PASSWORDS, password_hash

from core.config import load_config
from core.passwords import verify_password

ACME_SANDBOX = password_hash(PASSWORDS[("acme", "sandbox")])
ACME_PRODUCTION = password_hash(PASSWORDS[("acme", "production")])

# An operator's file: comments everywhere, aligned values, quoting of every kind, an explicit null.
HAND_WRITTEN = dedent(
    """\
    # lcsync configuration for the test bench
    timezone: Australia/Melbourne   # schedules and file names
    data_dir: ./var
    server:
      listen: ['127.0.0.1:2121']
      http: null                    # no health listener here

    clients:
      # Acme: payroll exports nightly
      acme:
        name: "Acme Pty Ltd"
        allowed_ips: ["127.0.0.1", "::1"]
        accounts:
          sandbox:    {username: acme-sandbox, password_hash: "SANDBOX"}   # set up 2026-01-05
        # acme production comes later
        import:
          file_pattern: 'acme_users*.csv'
          template:
            key: employee_id
            columns: {"Employee ID": employee_id, "Email": email}
            required: [employee_id, email]

    # end of clients
    """
).replace("SANDBOX", ACME_SANDBOX)


@pytest.fixture
def hand_written(tmp_path: Path) -> Path:
    path = tmp_path / "operator" / "accounts.yaml"
    path.parent.mkdir()
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    return path


def printed_password(result: Result) -> str:
    match = re.search(r"^password: (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def inserted_lines(before: str, after: str) -> list[tuple[int, list[str]]]:
    """Where ``after`` differs from ``before``: (position, lines) of each insertion; fails on any other change."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    insertions = []
    for tag, i1, _i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        assert tag in ("equal", "insert"), f"the file changed beyond insertions: {tag} {old[i1:_i2]} -> {new[j1:j2]}"
        if tag == "insert":
            insertions.append((i1, new[j1:j2]))
    return insertions


# --- accounts add ------------------------------------------------------------------------------------------------


def test_accounts_add_prints_the_password_once_and_stores_only_its_hash(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    password = printed_password(result)
    assert result.output.count(password) == 1
    assert "not stored anywhere" in result.stdout
    assert "username: acme\n" in result.stdout
    text = hand_written.read_text(encoding="utf-8")
    assert password not in text
    config = load_config(hand_written, {})
    account = config.clients["acme"].accounts["production"]
    assert account.username == "acme"
    assert verify_password(account.password_hash, password)
    assert account.allowed_ips is None  # it shares the client's list


def test_accounts_add_keeps_the_file_byte_for_byte_except_the_new_line(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    after = hand_written.read_text(encoding="utf-8")
    [(position, lines)] = inserted_lines(HAND_WRITTEN, after)
    # Right below the sandbox account, in its style (one flow mapping a line, double-quoted hash).
    assert HAND_WRITTEN.splitlines()[position - 1].lstrip().startswith("sandbox:")
    assert len(lines) == 1
    assert re.fullmatch(r'      production: \{username: acme, password_hash: "\$argon2id\$[^"]+"\}\n', lines[0])


def test_accounts_add_for_a_new_client_puts_the_addresses_on_the_client(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    args = ("--config", hand_written, "--allow-ip", "203.0.113.10", "--allow-ip", "2001:db8::/48")
    result = invoke("accounts", "add", "globex", "--env", "sandbox", *args)

    assert result.exit_code == 0, result.output
    assert "Added client and account globex/sandbox" in result.stdout
    assert "globex accepts no uploads until clients.globex.import is set" in result.stdout
    [(position, lines)] = inserted_lines(HAND_WRITTEN, hand_written.read_text(encoding="utf-8"))
    hashed = load_config(hand_written, {}).clients["globex"].accounts["sandbox"].password_hash
    assert "".join(lines) == (
        "  globex:\n"
        '    allowed_ips: ["203.0.113.10", "2001:db8::/48"]\n'
        "    accounts:\n"
        f'      sandbox: {{username: globex-sandbox, password_hash: "{hashed}"}}\n'
    )
    # After the last line of acme, before the blank line and the closing comment.
    assert HAND_WRITTEN.splitlines()[position - 1] == "        required: [employee_id, email]"

    # The production account added next shares the client's addresses.
    second = invoke("accounts", "add", "globex", "--env", "production", "--config", hand_written)
    assert second.exit_code == 0, second.output
    config = load_config(hand_written, {})
    assert config.clients["globex"].accounts["production"].username == "globex"
    assert [str(n) for n in config.allowed_networks("globex", "production")] == ["203.0.113.10/32", "2001:db8::/48"]


def test_accounts_add_for_an_existing_client_gives_the_account_its_own_addresses(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    args = ("--config", hand_written, "--allow-ip", "198.51.100.7", "--username", "acme-live")
    result = invoke("accounts", "add", "acme", "--env", "production", *args)

    assert result.exit_code == 0, result.output
    config = load_config(hand_written, {})
    assert config.clients["acme"].accounts["production"].username == "acme-live"
    assert [str(n) for n in config.allowed_networks("acme", "production")] == ["198.51.100.7/32"]
    assert [str(n) for n in config.allowed_networks("acme", "sandbox")] == ["127.0.0.1/32", "::1/128"]


def test_accounts_add_in_a_block_style_file_writes_block_style(
    invoke: Callable[..., Result], config_file: Path
) -> None:
    before = config_file.read_text(encoding="utf-8")
    result = invoke(
        "accounts", "add", "initech", "--env", "production", "--allow-ip", "192.0.2.1", "--config", config_file
    )

    assert result.exit_code == 0, result.output
    [(_, lines)] = inserted_lines(before, config_file.read_text(encoding="utf-8"))
    hashed = load_config(config_file, {}).clients["initech"].accounts["production"].password_hash
    assert "".join(lines) == (
        "  initech:\n"
        '    allowed_ips: ["192.0.2.1"]\n'
        "    accounts:\n"
        "      production:\n"
        "        username: initech\n"
        f"        password_hash: {hashed}\n"
    )


def test_accounts_add_keeps_the_file_mode_and_writes_through_a_symlink(
    invoke: Callable[..., Result], hand_written: Path, tmp_path: Path
) -> None:
    hand_written.chmod(0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(hand_written)

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", link)

    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert stat.S_IMODE(hand_written.stat().st_mode) == 0o640
    assert "production" in load_config(hand_written, {}).clients["acme"].accounts
    assert [p.name for p in hand_written.parent.iterdir()] == ["accounts.yaml"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("acme", "--env", "staging"),
            "Error: unknown environment 'staging' (known: sandbox, production)\n",
        ),
        (
            ("acme", "--env", "sandbox"),
            "Error: acme already has a sandbox account (username acme-sandbox); to give it a new password use "
            "`lcsync accounts passwd acme --env sandbox`\n",
        ),
        (
            ("globex", "--env", "sandbox", "--username", "ACME-Sandbox"),
            "Error: username 'ACME-Sandbox' is already used by acme/sandbox; choose another with --username\n",
        ),
        (
            ("globex", "--env", "sandbox", "--allow-ip", "10.0.0.1", "--allow-ip", "10.0.0.256"),
            "Error: '10.0.0.256' is not an IP address or network\n",
        ),
        (
            ("Globex Corp", "--env", "sandbox"),
            "Error: 'Globex Corp' cannot name a client: a name must be 1 to 63 lower-case letters, digits, '_' or "
            "'-' (it names folders)\n",
        ),
    ],
)
def test_accounts_add_refuses_and_leaves_the_file_alone(
    invoke: Callable[..., Result], hand_written: Path, args: tuple[str, ...], message: str
) -> None:
    result = invoke("accounts", "add", *args, "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == message
    assert "password" not in result.stdout
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


def test_accounts_add_refuses_a_change_that_would_not_load(invoke: Callable[..., Result], hand_written: Path) -> None:
    result = invoke(
        "accounts", "add", "globex", "--env", "sandbox", "--username", "globex sandbox", "--config", hand_written
    )

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{hand_written}: nothing was written: the change would make the file invalid:"
    assert lines[1] == (
        f"{hand_written}:25: clients.globex.accounts.sandbox.username: 'globex sandbox': a username may hold letters, "
        "digits and . _ @ - only"
    )
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


def test_accounts_add_on_an_invalid_file_lists_its_problems(invoke: Callable[..., Result], hand_written: Path) -> None:
    hand_written.write_text(HAND_WRITTEN.replace("timezone: Australia/Melbourne", "timezone: Melbourne"))

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == (
        f"{hand_written}:2: timezone: 'Melbourne' is not a time zone name (example: Australia/Melbourne)\n"
    )


def test_accounts_add_of_a_client_without_addresses_warns_that_it_cannot_log_in(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "initech", "--env", "sandbox", "--config", hand_written)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Warning: initech/sandbox has no allowed IP address, so no login is accepted yet: set allowed_ips.\n"
    )
    [(_, lines)] = inserted_lines(HAND_WRITTEN, hand_written.read_text(encoding="utf-8"))
    assert lines[1] == "    allowed_ips: []\n"
    assert load_config(hand_written, {}).allowed_networks("initech", "sandbox") == []


def test_accounts_add_keeps_windows_line_endings(invoke: Callable[..., Result], hand_written: Path) -> None:
    original = HAND_WRITTEN.replace("\n", "\r\n")
    hand_written.write_bytes(original.encode())

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    after = hand_written.read_bytes().decode()
    assert after.count("\r\n") == after.count("\n") == original.count("\n") + 1
    [(_, lines)] = inserted_lines(original, after)
    assert lines[0].startswith("      production: {username: acme, ") and lines[0].endswith("}\r\n")


# --- accounts passwd ---------------------------------------------------------------------------------------------


def test_accounts_passwd_replaces_the_hash_in_place(invoke: Callable[..., Result], hand_written: Path) -> None:
    old_password = PASSWORDS[("acme", "sandbox")]
    result = invoke("accounts", "passwd", "acme", "--env", "sandbox", "--config", hand_written)

    assert result.exit_code == 0, result.output
    password = printed_password(result)
    assert result.output.count(password) == 1
    assert "not stored anywhere" in result.stdout
    account = load_config(hand_written, {}).clients["acme"].accounts["sandbox"]
    assert verify_password(account.password_hash, password)
    assert not verify_password(account.password_hash, old_password)
    after = hand_written.read_text(encoding="utf-8")
    assert after == HAND_WRITTEN.replace(ACME_SANDBOX, account.password_hash)
    assert password not in after


def test_accounts_passwd_in_a_block_style_file_changes_one_line(
    invoke: Callable[..., Result], config_file: Path
) -> None:
    before = config_file.read_text(encoding="utf-8")

    result = invoke("accounts", "passwd", "globex", "--env", "production", "--config", config_file)

    assert result.exit_code == 0, result.output
    after = config_file.read_text(encoding="utf-8")
    changed = [(old, new) for old, new in zip(before.splitlines(), after.splitlines(), strict=True) if old != new]
    new_hash = load_config(config_file, {}).clients["globex"].accounts["production"].password_hash
    assert changed == [
        (
            f"        password_hash: {password_hash(PASSWORDS[('globex', 'production')])}",
            f"        password_hash: {new_hash}",
        )
    ]
    assert verify_password(new_hash, printed_password(result))


def test_accounts_passwd_of_a_missing_account_is_a_usage_error(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "passwd", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: acme has no production account (add one with `lcsync accounts add acme --env production`)\n"
    )
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


# --- accounts list -----------------------------------------------------------------------------------------------


def test_accounts_list_shows_effective_addresses_and_tls(
    invoke: Callable[..., Result], write_config: Callable[..., Path]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clients"]["globex"]["accounts"]["production"]["allowed_ips"] = ["203.0.113.0/24"]
        data["clients"]["globex"]["allowed_ips"] = []

    result = invoke("accounts", "list", "--config", write_config(edit))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "CLIENT  ENVIRONMENT  USERNAME        ALLOWED IPS                TLS",
        "acme    sandbox      acme-sandbox    127.0.0.1, ::1             optional",
        "acme    production   acme            127.0.0.1, ::1             required",
        "globex  sandbox      globex-sandbox  (none: no login accepted)  optional",
        "globex  production   globex          203.0.113.0/24             required",
    ]
    assert "$argon2id$" not in result.output


def test_config_comes_from_lcsync_config_then_the_current_folder(
    invoke: Callable[..., Result], config_file: Path, hand_written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_variable = invoke("accounts", "list", env={"LCSYNC_CONFIG": str(config_file)})
    assert "globex" in by_variable.stdout
    monkeypatch.chdir(hand_written.parent)
    by_folder = invoke("accounts", "list")
    assert by_folder.exit_code == 0
    assert "globex" not in by_folder.stdout and "acme-sandbox" in by_folder.stdout
    by_option = invoke("accounts", "list", "--config", config_file, env={"LCSYNC_CONFIG": "/nowhere.yaml"})
    assert "globex" in by_option.stdout
