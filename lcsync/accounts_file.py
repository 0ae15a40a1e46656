"""Edit accounts.yaml in place for `lcsync accounts add` and `lcsync accounts passwd`.

accounts.yaml belongs to the operator: its comments, key order, quoting and alignment must survive an edit. A YAML
round trip does not keep all of that (ruamel.yaml rewrites ``null`` as an empty value and collapses aligned values),
so the file is never re-serialised: ruamel.yaml's round-trip parser only finds where things are, and the edit is
made on the text, as lines inserted or one value replaced. The edited text must pass the full configuration check
(``core.config.parse_config``) and still hold every other account unchanged before it replaces the file, atomically
and with the file's mode kept.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from core.config import Config, name_problem, parse_config
from core.errors import ConfigError, LcsyncError, UsageError

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9._@-]*$")
# Words that some YAML readers (1.1) take for booleans or null: never write them unquoted.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


@dataclass(frozen=True)
class AddedAccount:
    """What `accounts add` wrote."""

    config: Config  # the configuration as now written
    client: str
    env: str
    username: str
    new_client: bool  # the client did not exist and was created


@dataclass(frozen=True)
class _Style:
    """How the file writes accounts, so an inserted one looks like its neighbours."""

    flow: bool = True  # {username: ..., password_hash: ...} on one line, as in the sample file
    quote: str = '"'  # how password_hash is quoted: '"', "'" or "" (plain, block style only)
    step: int = 2  # indentation step of block mappings (a client's keys under its name)


def default_username(client: str, env: str) -> str:
    """``acme`` for production, ``acme-sandbox`` for any other environment."""
    return client if env == "production" else f"{client}-{env}"


def add_account(
    path: Path,
    client: str,
    env: str,
    password_hash: str,
    username: str | None = None,
    allowed_ips: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> AddedAccount:
    """Add the account of ``client`` for ``env`` to the file at ``path``, creating the client if it is new.

    ``allowed_ips`` become the new client's ``allowed_ips`` when the client is created (shared by its accounts in
    every environment), or the account's own ``allowed_ips`` when the client exists (replacing the client's list for
    this account). Raises ConfigError when the file is invalid (before or after the edit), UsageError when the
    request cannot work (unknown environment, existing account, username taken, invalid IP or client name).
    """
    text = _read(path)
    config = parse_config(text, path, environ)
    if env not in config.environments:
        raise UsageError(f"unknown environment {env!r} (known: {', '.join(config.environments)})")
    problem = name_problem(client)
    if problem:
        raise UsageError(f"{client!r} cannot name a client: {problem}")
    existing = config.clients.get(client)
    if existing is not None and env in existing.accounts:
        raise UsageError(
            f"{client} already has a {env} account (username {existing.accounts[env].username}); "
            f"to give it a new password use `lcsync accounts passwd {client} --env {env}`"
        )
    username = username or default_username(client, env)
    for other_client, other_env, account in config.accounts():
        if account.username.lower() == username.lower():
            raise UsageError(
                f"username {username!r} is already used by {other_client}/{other_env}; choose another with --username"
            )
    for ip in allowed_ips:
        try:
            ipaddress.ip_network(ip.strip(), strict=False)
        except ValueError:
            raise UsageError(f"{ip!r} is not an IP address or network") from None

    document = _parse(text)
    lines = text.splitlines(keepends=True)
    newline = _newline(lines)
    style = _account_style(document, client)
    entry = _account_entry(username, password_hash, allowed_ips if existing is not None else (), style)
    clients: CommentedMap = document["clients"]
    if existing is not None:
        accounts: CommentedMap = clients[client]["accounts"]
        if _is_flow(accounts):
            raise UsageError(
                f"clients.{client}.accounts is written on one line ({{...}}); "
                "write it as a block mapping, one account a line, and run this again"
            )
        key_line, key_col = accounts.lc.key(list(accounts)[-1])
        after = _node_end(lines, key_line, key_col)
        added = _entry_lines(key_col, env, entry, style)
    else:
        after, client_col = _clients_insertion_point(document, lines)
        added = [f"{' ' * client_col}{_scalar(client)}:"]
        if allowed_ips:
            added.append(f"{' ' * (client_col + style.step)}allowed_ips: {_ip_list(allowed_ips)}")
        else:
            # An empty list shows the operator where the client's nominated addresses go.
            added.append(f"{' ' * (client_col + style.step)}allowed_ips: []")
        added.append(f"{' ' * (client_col + style.step)}accounts:")
        added += _entry_lines(client_col + 2 * style.step, env, entry, style)
    new_text = _insert(lines, after, added, newline)

    new_config = _validate(new_text, path, environ, config)
    written = new_config.clients.get(client)
    if written is None or env not in written.accounts or written.accounts[env].password_hash != password_hash:
        raise LcsyncError(f"{path}: the account could not be placed in the file; nothing was written")
    _write_atomically(path, new_text, text)
    return AddedAccount(new_config, client, env, username, existing is None)


def set_password_hash(
    path: Path, client: str, env: str, password_hash: str, environ: Mapping[str, str] = os.environ
) -> Config:
    """Replace the password_hash of ``client``'s ``env`` account in place. Returns the configuration as written."""
    text = _read(path)
    config = parse_config(text, path, environ)
    if client not in config.clients:
        raise UsageError(f"no client {client!r} in {path} (add it with `lcsync accounts add {client} --env {env}`)")
    if env not in config.clients[client].accounts:
        raise UsageError(f"{client} has no {env} account (add one with `lcsync accounts add {client} --env {env}`)")
    account = _parse(text)["clients"][client]["accounts"][env]
    line, col = account.lc.value("password_hash")
    old = str(account["password_hash"])
    lines = text.splitlines(keepends=True)
    # An argon2 hash never needs escaping in YAML, so the stored value appears verbatim where the parser saw it.
    start = lines[line].find(old, col)
    if start < 0:
        raise LcsyncError(
            f"{path}:{line + 1}: cannot find the password_hash of {client}/{env} on its line; "
            "replace it by hand with the hash from `lcsync hash-password`"
        )
    lines[line] = lines[line][:start] + password_hash + lines[line][start + len(old) :]
    new_text = "".join(lines)
    new_config = _validate(new_text, path, environ, config, changed=(client, env))
    if new_config.clients[client].accounts[env].password_hash != password_hash:
        raise LcsyncError(f"{path}: the new password hash could not be placed in the file; nothing was written")
    _write_atomically(path, new_text, text)
    return new_config


# --- finding places in the text ------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        # newline="" keeps CRLF files byte-for-byte.
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set --config or LCSYNC_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


def _parse(text: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml.load(text)


def _newline(lines: list[str]) -> str:
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\n"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _node_end(lines: list[str], key_line: int, key_col: int) -> int:
    """The last line (0-based) of the value of the mapping key at ``key_line``/``key_col``.

    The value runs on while lines are indented deeper than the key; comments and blank lines after its last line
    belong to what follows, so they stay below an inserted entry.
    """
    end = key_line
    for index in range(key_line + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _indent(lines[index]) > key_col:
            end = index
        else:
            break
    return end


def _clients_insertion_point(document: CommentedMap, lines: list[str]) -> tuple[int, int]:
    """Where a new client goes (after the last one) and the column of client keys. May rewrite ``clients: {}``."""
    clients: CommentedMap = document["clients"]
    if len(clients) == 0:
        line, col = document.lc.value("clients")
        text = lines[line]
        if not text.startswith("{}", col):
            raise UsageError("clients is not written as a block mapping; add the client by hand")
        # `clients: {}` becomes `clients:`, with the new client below it.
        lines[line] = text[:col].rstrip(" ") + text[col + 2 :]
        return line, document.lc.key("clients")[1] + 2
    if _is_flow(clients):
        raise UsageError("clients is written on one line ({...}); write it as a block mapping and run this again")
    key_line, key_col = clients.lc.key(list(clients)[-1])
    return _node_end(lines, key_line, key_col), key_col


def _insert(lines: list[str], after: int, added: list[str], newline: str) -> str:
    head = lines[: after + 1]
    if head and not head[-1].endswith(("\n", "\r")):
        head[-1] += newline
    return "".join([*head, *(line + newline for line in added), *lines[after + 1 :]])


def _is_flow(node: Any) -> bool:
    return bool(getattr(node, "fa", None) is not None and node.fa.flow_style())


# --- writing an account in the file's own style ------------------------------------------------------------------


def _account_style(document: CommentedMap, client: str) -> _Style:
    """The style of an existing account: of this client if it has one, else of the first client that has."""
    clients: CommentedMap = document["clients"]
    step = 2
    for name, body in clients.items():
        if isinstance(body, CommentedMap) and len(body) and not _is_flow(body):
            step = body.lc.key(next(iter(body)))[1] - clients.lc.key(name)[1]
            break
    order = [client, *(name for name in clients if name != client)] if client in clients else list(clients)
    for name in order:
        for account in clients[name].get("accounts", {}).values():
            if not isinstance(account, CommentedMap) or "password_hash" not in account:
                continue
            stored = account["password_hash"]
            quote = "'" if isinstance(stored, SingleQuotedScalarString) else '"'
            if _is_flow(account):
                return _Style(flow=True, quote=quote, step=max(step, 1))
            if type(stored) is str:  # a plain scalar is a bare str; quoted ones load as str subclasses
                quote = ""
            return _Style(flow=False, quote=quote, step=max(step, 1))
    return _Style(step=max(step, 1))


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar that every YAML reader takes for this same string."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def _quoted(text: str, quote: str) -> str:
    if quote == "'":
        return "'" + text.replace("'", "''") + "'"
    if quote == "":
        return text
    return json.dumps(text)


def _ip_list(ips: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(ip.strip()) for ip in ips) + "]"


def _account_entry(username: str, password_hash: str, allowed_ips: Sequence[str], style: _Style) -> list[str]:
    """The ``key: value`` items of a new account."""
    items = [f"username: {_scalar(username)}", f"password_hash: {_quoted(password_hash, style.quote)}"]
    if allowed_ips:
        items.append(f"allowed_ips: {_ip_list(allowed_ips)}")
    return items


def _entry_lines(col: int, env: str, items: list[str], style: _Style) -> list[str]:
    if style.flow:
        return [f"{' ' * col}{_scalar(env)}: {{{', '.join(items)}}}"]
    return [f"{' ' * col}{_scalar(env)}:", *(f"{' ' * (col + style.step)}{item}" for item in items)]


# --- checking and writing ----------------------------------------------------------------------------------------


def _validate(
    text: str, path: Path, environ: Mapping[str, str], before: Config, changed: tuple[str, str] | None = None
) -> Config:
    """The configuration ``text`` makes; every account that was there before must be there unchanged."""
    try:
        after = parse_config(text, path, environ)
    except ConfigError as exc:
        raise ConfigError(
            [f"{path}: nothing was written: the change would make the file invalid:", *exc.problems]
        ) from exc
    now = {(client, env): account for client, env, account in after.accounts()}
    for client, env, account in before.accounts():
        if (client, env) == changed:
            continue
        if now.get((client, env)) != account:
            raise LcsyncError(f"{path}: the edit would have changed {client}/{env} too; nothing was written")
    return after


def _write_atomically(path: Path, text: str, original: str) -> None:
    """Replace the file (the target of a symbolic link) in one step, keeping its mode and, where allowed, owner."""
    target = path.resolve()
    status = target.stat()
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, stat.S_IMODE(status.st_mode))
        with contextlib.suppress(OSError):  # only root may give a file away; the mode is what matters
            os.chown(temporary, status.st_uid, status.st_gid)
        if _read(target) != original:
            raise LcsyncError(f"{path} changed while it was being edited; nothing was written, run the command again")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
