"""The configuration model of accounts.yaml (SPEC section 2).

The file is read once, at the edge (``load_config``), validated in full, and handed down as a frozen ``Config``.
Every mistake is reported with the file, the line and the key path, e.g.::

    accounts.yaml:14: clients.acme.accounts.production.allowed_ips[1]: '300.1.2.3' is not an IP address or network
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from core.config_base import (
    DEFAULT_CONFIG,
    LMS_USER_FIELDS,
    RESERVED_DIR_NAMES,
    TEMPORARY_SUFFIXES,
    ByteSize,
    Duration,
    ImportConfig,
    IPNetwork,
    TemplateConfig,
    _check_cron,
    _CrossCheckError,
    _Strict,
    name_problem,
)
from core.reports import (
    COMPLETION_REPORT_COLUMNS,
    COMPLETION_STATUS_VALUES,
    CUSTOM_PREFIX,
    FILTER_OPS,
    GROUP_PREFIX,
    REPORT_COLUMNS,
    USER_REPORT_COLUMNS,
    USER_STATUS_VALUES,
    WEEKDAYS,
    ColumnKind,
    Problems,
    ReportConfig,
    ReportFilter,
    check_reports,
    column_kind,
    column_label,
    report_file_stem,
    schedule_cron,
)

__all__ = [
    "COMPLETION_REPORT_COLUMNS",
    "COMPLETION_STATUS_VALUES",
    "CUSTOM_PREFIX",
    "DEFAULT_CONFIG",
    "FILTER_OPS",
    "GROUP_PREFIX",
    "LMS_USER_FIELDS",
    "REPORT_COLUMNS",
    "RESERVED_DIR_NAMES",
    "TEMPORARY_SUFFIXES",
    "USER_REPORT_COLUMNS",
    "USER_STATUS_VALUES",
    "WEEKDAYS",
    "AccountConfig",
    "BanConfig",
    "ByteSize",
    "ClientConfig",
    "ColumnKind",
    "Config",
    "Duration",
    "EnvironmentConfig",
    "IPNetwork",
    "ImportConfig",
    "ListenAddress",
    "Problems",
    "ReportConfig",
    "ReportFilter",
    "ServerConfig",
    "TemplateConfig",
    "TlsConfig",
    "check_reports",
    "column_kind",
    "column_label",
    "config_path",
    "is_temporary_name",
    "load_config",
    "name_problem",
    "parse_config",
    "report_file_stem",
    "schedule_cron",
]
from core.errors import ConfigError

# --- server ------------------------------------------------------------------------------------------------------


class TlsConfig(_Strict):
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key, or neither (a self-signed pair is then generated)")
        return self


class BanConfig(_Strict):
    failures: int = Field(default=5, ge=1)
    within: Duration = 600.0
    for_: Duration = Field(default=1800.0, alias="for")


class ListenAddress(_Strict):
    host: str
    port: int


def _parse_listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    text = str(value).strip()
    match = re.match(r"^\[(?P<h6>[0-9a-fA-F:.]+)\]:(?P<p6>\d+)$|^(?P<h4>[^:\[\]]+):(?P<p4>\d+)$", text)
    if not match:
        raise ValueError(f"{value!r} is not host:port (examples: 127.0.0.1:2121, [::]:21)")
    host = match.group("h6") or match.group("h4")
    port = int(match.group("p6") or match.group("p4"))
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    return ListenAddress(host=host, port=port)


def _parse_port_range(value: Any) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)\s*-\s*(\d+)\s*$", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a port range (example: 60000-60099)")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: ports must satisfy 1024 <= first <= last <= 65535")
    return low, high


class ServerConfig(_Strict):
    listen: list[Annotated[ListenAddress, BeforeValidator(_parse_listen)]] = Field(
        default_factory=lambda: [ListenAddress(host="127.0.0.1", port=2121)], min_length=1
    )
    passive_ports: Annotated[tuple[int, int], BeforeValidator(_parse_port_range)] = (60000, 60099)
    masquerade_address: str | None = None
    tls: TlsConfig = TlsConfig()
    max_connections: int = Field(default=256, ge=1)
    max_connections_per_ip: int = Field(default=16, ge=1)
    ban: BanConfig = BanConfig()
    max_upload_size: ByteSize = 1024**3
    http: str | None = "127.0.0.1:9121"
    idle_timeout: Duration = 300.0
    data_timeout: Duration = 300.0

    @field_validator("masquerade_address")
    @classmethod
    def _masquerade_is_ipv4(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address (PASV replies carry IPv4 only)") from None
        return value

    @field_validator("http")
    @classmethod
    def _http_listen(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_listen(value)
        return value


# --- environments and clients --------------------------------------------------------------------------------


class EnvironmentConfig(_Strict):
    database: str
    require_tls: bool = False
    import_schedule: str = "on_arrival"

    @field_validator("import_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return value if value == "on_arrival" else _check_cron(value)

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.replace("{data_dir}", "/data"))
        except ArgumentError:
            raise ValueError(
                "not a database URL (examples: sqlite:///{data_dir}/sandbox.db, postgresql+psycopg://user@host/db)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"{url.get_backend_name()!r} is not supported: use sqlite or postgresql+psycopg")
        return value


def _default_environments() -> dict[str, EnvironmentConfig]:
    return {
        "sandbox": EnvironmentConfig(database="sqlite:///{data_dir}/sandbox.db"),
        "production": EnvironmentConfig(
            database="sqlite:///{data_dir}/production.db", require_tls=True, import_schedule="0 0 * * *"
        ),
    }


class AccountConfig(_Strict):
    username: str = Field(min_length=1, max_length=64)
    password_hash: str
    allowed_ips: list[IPNetwork] | None = None

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._@-]+", value):
            raise ValueError(f"{value!r}: a username may hold letters, digits and . _ @ - only")
        return value

    @field_validator("password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if value.startswith("$argon2id$"):
            return value
        if value.startswith("$"):
            raise ValueError("not an argon2id hash; make one with `lcsync hash-password`")
        raise ValueError(
            "looks like a plaintext password, which must never be stored; "
            "put the argon2id hash from `lcsync hash-password` here"
        )


class ClientConfig(_Strict):
    name: str | None = None
    allowed_ips: list[IPNetwork] = []
    accounts: dict[str, AccountConfig] = Field(min_length=1)
    import_: ImportConfig | None = Field(None, alias="import")
    reports: list[ReportConfig] = []

    @model_validator(mode="after")
    def _reports_fit(self) -> ClientConfig:
        """Report columns and filters must exist in the client's template; names unique; environments accounts."""
        if self.reports:
            template = self.import_.template if self.import_ is not None else None
            reports, problems = check_reports(self.reports, template, self.accounts)
            if problems:
                raise _CrossCheckError(problems)
            object.__setattr__(self, "reports", reports)  # the canonical columns and typed filter values
        return self

    def is_import_name(self, filename: str) -> bool:
        """Whether ``filename`` is an intended User Data file name (file_pattern, case-insensitively)."""
        if self.import_ is None or is_temporary_name(filename):
            return False
        return fnmatch.fnmatchcase(filename.lower(), self.import_.file_pattern.lower())


def is_temporary_name(filename: str) -> bool:
    """Names that clients give a file while it is being uploaded (WinSCP .filepart, rclone/lftp .part, .tmp)."""
    return filename.lower().endswith(TEMPORARY_SUFFIXES)


class Config(_Strict):
    timezone: str = "Australia/Melbourne"
    data_dir: Path = Path("./var")
    server: ServerConfig = ServerConfig()
    delivery_schedule: str = "5 0 * * *"
    retention_days: int = Field(default=30, ge=1)
    archive_days: int = Field(default=90, ge=1)
    environments: dict[str, EnvironmentConfig] = Field(default_factory=_default_environments, min_length=1)
    clients: dict[str, ClientConfig]
    source: Path | None = Field(None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name (example: Australia/Melbourne)") from None
        return value

    @field_validator("delivery_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)

    @field_validator("environments", "clients")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((name,), problem) for name in value if (problem := name_problem(str(name)))
        ]
        if problems:
            raise _CrossCheckError(problems)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, tuple[str, str]] = {}
        for client_id, client in self.clients.items():
            for env, account in client.accounts.items():
                where: tuple[str | int, ...] = ("clients", client_id, "accounts", env)
                if env not in self.environments:
                    known = ", ".join(self.environments)
                    problems.append((where, f"unknown environment {env!r} (known: {known})"))
                other = seen.get(account.username.lower())
                if other:
                    problems.append(
                        (
                            (*where, "username"),
                            f"{account.username!r} is already the username of {other[0]}/{other[1]}",
                        )
                    )
                seen[account.username.lower()] = (client_id, env)
            for index, report in enumerate(client.reports):
                for env in report.environments:
                    if env not in self.environments:
                        problems.append(
                            (
                                ("clients", client_id, "reports", index, "environments"),
                                f"unknown environment {env!r}",
                            )
                        )
        if problems:
            raise _CrossCheckError(problems)
        return self

    # --- derived values --------------------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def database_url(self, env: str) -> str:
        return self.environments[env].database.replace("{data_dir}", str(self.data_dir))

    def accounts(self) -> Iterator[tuple[str, str, AccountConfig]]:
        """Every (client id, environment, account)."""
        for client_id, client in self.clients.items():
            for env, account in client.accounts.items():
                yield client_id, env, account

    def allowed_networks(self, client_id: str, env: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        client = self.clients[client_id]
        account = client.accounts[env]
        return list(account.allowed_ips if account.allowed_ips is not None else client.allowed_ips)


# --- loading -----------------------------------------------------------------------------------------------------


def config_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The configuration file: --config, else $LCSYNC_CONFIG, else ./accounts.yaml."""
    if explicit:
        return Path(explicit)
    return Path(environ.get("LCSYNC_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate one accounts.yaml. Raises ConfigError listing every mistake with its line and key path.

    A relative ``data_dir`` is taken relative to the configuration file's folder; ``LCSYNC_DATA_DIR`` overrides it
    (a relative one is taken relative to the current folder, as any path given on a command line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set --config or LCSYNC_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return parse_config(text, path, environ)


class _TextDates(RoundTripConstructor):
    """Reads 2026-01-31 as text, not a date: the report checks then say which line holds an impossible date
    (ruamel would raise a bare ValueError for 2026-13-01) and parse the possible ones themselves."""


_TextDates.add_constructor("tag:yaml.org,2002:timestamp", _TextDates.construct_yaml_str)


def parse_config(text: str, path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    yaml = YAML(typ="rt")
    yaml.Constructor = _TextDates
    try:
        document = yaml.load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        found = re.match(r'found duplicate key "(.*?)" with value', exc.problem or "")
        key = f" {found.group(1)!r}" if found else ""
        raise ConfigError(f"{path}{line}: duplicate key{key}: a key may appear only once in a mapping") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}:1: the file must be a mapping with at least a 'clients' key")
    data: dict[str, Any] = dict(document)
    if environ.get("LCSYNC_DATA_DIR"):
        data["data_dir"] = environ["LCSYNC_DATA_DIR"]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, document, path)) from None
    base = Path.cwd() if environ.get("LCSYNC_DATA_DIR") else path.parent
    data_dir = config.data_dir if config.data_dir.is_absolute() else (base / config.data_dir)
    return config.model_copy(update={"data_dir": Path(os.path.normpath(data_dir.absolute())), "source": path})


def _describe(exc: ValidationError, document: Any, path: Path) -> list[str]:
    """One line per problem, in file order."""
    problems: list[tuple[int, str]] = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not isinstance(part, str) or not part.startswith("function-"))
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossCheckError):
            for where, message in ctx_error.problems:
                problems.append(_line(path, document, (*loc, *where), message))
            continue
        if loc and loc[-1] == "password_hash" and error["type"] != "value_error":
            message = "must be the argon2id hash (a string) from `lcsync hash-password`"
        else:
            message = _message(error)
        problems.append(_line(path, document, loc, message))
    return [text for _, text in sorted(problems, key=lambda problem: problem[0])]


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        return f"{error['input']!r}: {message[0].lower()}{message[1:]}"
    return message


def _line(path: Path, document: Any, loc: tuple[Any, ...], message: str) -> tuple[int, str]:
    """The line number (0 when unknown) and the text of one problem."""
    key_path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    line = _find_line(document, loc)
    where = f"{path}:{line}" if line else str(path)
    return line or 0, f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}"


def _find_line(document: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest key of ``loc`` that exists in the YAML document."""
    node, line = document, None
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, Mapping) and part in node:
                if lc is not None:
                    line = lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                if lc is not None:
                    line = lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and getattr(document, "lc", None) is not None:
        return int(document.lc.line) + 1
    return line
