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
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from core.errors import ConfigError

DEFAULT_CONFIG = Path("accounts.yaml")
RESERVED_DIR_NAMES = frozenset({"spool", "archive", "outbox", "tls", "incoming", "state"})
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


# --- value types -------------------------------------------------------------------------------------------------


class _CrossCheckError(ValueError):
    """Several problems, each at a key path relative to where the validator runs (so each gets its own line)."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a client or an environment (they name folders), or None when it can."""
    if not _NAME.match(name):
        return "a name must be 1 to 63 lower-case letters, digits, '_' or '-' (it names folders)"
    if name in RESERVED_DIR_NAMES:
        return "this name is reserved for lcsync's internal folders"
    return None


def _parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = str(value).strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:203.0.113.10 means 203.0.113.10
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match or (match.group(2) is not None and match.group(2).lower() not in _SIZE_UNITS):
        raise ValueError(f"{value!r} is not a size (examples: 1GiB, 500MB, 1048576)")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 10m, 2h, 1d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _check_cron(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '5 0 * * *'): {exc}") from None
    return value


IPNetwork = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_parse_network)]
ByteSize = Annotated[int, BeforeValidator(_parse_size)]
Duration = Annotated[float, BeforeValidator(_parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


LMS_USER_FIELDS = (
    "employee_id", "username", "first_name", "last_name", "email", "status",
    "manager_id", "start_date", "end_date", "phone", "job_title",
)  # fmt: skip


class TemplateConfig(_Strict):
    key: str
    columns: dict[str, str]
    group_types: list[str] = []
    custom_fields: list[str] = []
    required: list[str]
    date_format: str = "%d/%m/%Y"
    delimiter: str | None = None
    mode: Literal["full", "delta"] = "full"
    max_suspend_percent: float = Field(default=10.0, ge=0, le=100)
    on_row_error: Literal["skip", "reject"] = "skip"

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        known = ", ".join(LMS_USER_FIELDS)
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((header,), f"column {header!r} maps to unknown LMS field {field!r} (known: {known})")
            for header, field in value.items()
            if field not in LMS_USER_FIELDS
        ]
        if problems:
            raise _CrossCheckError(problems)
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and value not in (",", ";", "\t", "|"):
            raise ValueError(f"{value!r} is not a supported delimiter (one of , ; | or a tab)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TemplateConfig:
        mapped = set(self.columns.values())
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.key not in mapped:
            problems.append((("key",), f"{self.key!r} is not one of the LMS fields mapped in columns"))
        for index, name in enumerate(self.required):
            if name not in mapped:
                problems.append((("required", index), f"required field {name!r} is not mapped by any column"))
        if problems:
            raise _CrossCheckError(problems)
        return self


class ImportConfig(_Strict):
    file_pattern: str = Field(min_length=1)
    template: TemplateConfig

    @field_validator("file_pattern")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith("."):
            raise ValueError(f"{value!r}: a file pattern names files in upload/, without folders or a leading dot")
        if value.lower().endswith(TEMPORARY_SUFFIXES):
            raise ValueError(
                f"{value!r}: names ending {', '.join(TEMPORARY_SUFFIXES)} are reserved for temporary files"
            )
        return value


class ReportFilter(_Strict):
    field: str
    op: str
    value: Any = None


class ReportConfig(_Strict):
    name: str = Field(min_length=1)
    source: Literal["users", "completions"]
    columns: list[str] = Field(min_length=1)
    filters: list[ReportFilter] = []
    schedule: str = "daily"
    format: Literal["csv", "xlsx"] = "csv"
    environments: list[str] = ["production"]
    bom: bool = True


class ClientConfig(_Strict):
    name: str | None = None
    allowed_ips: list[IPNetwork] = []
    accounts: dict[str, AccountConfig] = Field(min_length=1)
    import_: ImportConfig | None = Field(None, alias="import")
    reports: list[ReportConfig] = []

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


def parse_config(text: str, path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    yaml = YAML(typ="rt")
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
