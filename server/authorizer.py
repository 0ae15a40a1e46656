"""Who may log in, from where, and what each account may do in its home.

The address allowlist is checked before any password hashing, so a flood from a refused address costs no argon2id
work. Every refusal raises the same ``AuthenticationFailed`` (one 530 for the client); the reason goes to the log.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed

from core.config import ClientConfig, Config
from core.layout import HOME_FOLDERS, Layout
from core.log import event
from core.metrics import METRICS
from core.passwords import verify_password
from server.bans import BanList

log = logging.getLogger("lcsync.auth")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What each place in a home allows, in pyftpdlib's letters: e=CWD l=LIST r=RETR w=STOR a=APPE (refused with a reason
# by the handler) f=rename d=DELE (in upload/ only of temporary names, see the handler) T=MFMT.
ROOT_PERMS = "el"
FOLDER_PERMS = {"upload": "elwadfT", "reports": "elrd", "results": "elrd"}


class LoginRefused(AuthenticationFailed):
    """A refused login; ``reason`` is for the log only, the client sees one message for every reason."""

    def __init__(self, reason: str) -> None:
        super().__init__("Authentication failed.")
        self.reason = reason


@dataclass(frozen=True)
class Account:
    username: str
    client_id: str
    env: str
    password_hash: str
    networks: tuple[IPNetwork, ...]
    home: Path
    require_tls: bool
    client: ClientConfig


def normalise_address(address: str) -> IPAddress:
    """An address as seen on a socket; ``::ffff:203.0.113.10`` (IPv4 on a dual-stack socket) is 203.0.113.10."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Authorizer:
    """pyftpdlib's authorizer interface over the accounts of accounts.yaml, reloadable while serving."""

    def __init__(self, config: Config, bans: BanList, *, cache_logins: bool = True) -> None:
        self.bans = bans
        self.cache_logins = cache_logins
        # Keyed digests of verified logins: a process-local secret, the stored hash and the password go in, so the
        # cache holds no password and a changed hash invalidates it.
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[str, bytes] = {}
        self._cache_lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self.update_config(config)

    def update_config(self, config: Config) -> None:
        layout = Layout(config.data_dir)
        accounts: dict[str, Account] = {}
        for client_id, env, account in config.accounts():
            home = layout.home(env, client_id)
            layout.ensure(env, client_id)
            accounts[account.username.lower()] = Account(
                username=account.username,
                client_id=client_id,
                env=env,
                password_hash=account.password_hash,
                networks=tuple(config.allowed_networks(client_id, env)),
                home=Path(os.path.realpath(home)),
                require_tls=config.environments[env].require_tls,
                client=config.clients[client_id],
            )
        self._accounts = accounts  # one assignment: connection threads see the old or the new map, never a mix

    def account(self, username: str) -> Account | None:
        return self._accounts.get(username.lower())

    # --- pyftpdlib's authorizer interface -------------------------------------------------------------------

    def may_log_in_from(self, address: str) -> bool:
        """Whether any account accepts logins from ``address``."""
        ip = normalise_address(address)
        return any(ip in network for account in self._accounts.values() for network in account.networks)

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        address = handler.remote_ip
        try:
            # A session left on the acceptor's loop must never hash (it would stall every client); its address was
            # allowed nowhere when it connected, and a reload since does not change that for this session.
            self._check(username, password, address, refuse_address=getattr(handler, "on_acceptor_loop", False))
        except LoginRefused as refused:
            handler.login_failure_reason = refused.reason
            if self.bans.record_failure(str(normalise_address(address))):
                METRICS.inc("lcsync_bans_total")
                policy = self.bans.policy
                event(
                    log, "ip_banned", logging.WARNING, ip=address,
                    failures=policy.failures, within_s=policy.within, for_s=policy.for_,
                )  # fmt: skip
            raise
        self.bans.record_success(str(normalise_address(address)))

    def _check(self, username: str, password: str, address: str, *, refuse_address: bool = False) -> None:
        account = self.account(username)
        if account is None:
            raise LoginRefused("unknown user")
        if refuse_address or not any(normalise_address(address) in network for network in account.networks):
            raise LoginRefused("address not allowed")
        if self._cached(account, password):
            return
        if not verify_password(account.password_hash, password):
            raise LoginRefused("wrong password")
        self._remember(account, password)

    def _digest(self, account: Account, password: str) -> bytes:
        message = account.password_hash.encode() + b"\0" + password.encode("utf-8", "surrogateescape")
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()

    def _cached(self, account: Account, password: str) -> bool:
        if not self.cache_logins:
            return False
        with self._cache_lock:
            known = self._cache.get(account.username.lower())
        return known is not None and hmac.compare_digest(known, self._digest(account, password))

    def _remember(self, account: Account, password: str) -> None:
        if self.cache_logins:
            digest = self._digest(account, password)
            with self._cache_lock:
                self._cache[account.username.lower()] = digest

    def get_home_dir(self, username: str) -> str:
        account = self.account(username)
        if account is None:
            raise LoginRefused("unknown user")
        return str(account.home)

    def has_user(self, username: str) -> bool:
        return self.account(username) is not None

    def get_perms(self, username: str) -> str:
        return "elrwfdT" if self.has_user(username) else ""

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        account = self.account(username)
        if account is None:
            return False
        if path is None:
            return perm in ROOT_PERMS
        return perm in perms_for(account.home, path)

    def get_msg_login(self, username: str) -> str:
        account = self.account(username)
        return f"Welcome, {account.client.name or account.client_id} ({account.env})." if account else "Welcome."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


def perms_for(home: Path, path: str) -> str:
    """The permissions at ``path`` (a real file-system path) inside ``home``: none outside it."""
    try:
        relative = Path(path).relative_to(home)
    except ValueError:
        return ""
    parts = relative.parts
    if not parts:
        return ROOT_PERMS
    if parts[0] not in HOME_FOLDERS:
        return ""
    if len(parts) == 1:  # the folder itself: list and enter, never rename or delete
        return "el"
    if len(parts) > 2:  # nothing is nested inside the three folders
        return ""
    return FOLDER_PERMS[parts[0]]
