"""Who may log in from where, what TLS is demanded, which names and places are allowed, and that nothing escapes."""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import socket
import ssl
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PASSWORDS
from serving import Running, connect, download, running, upload, user_data, wait_for

from core.config import Config, load_config

REFUSED = "530 Authentication failed."


@pytest.fixture
def server(config: Config) -> Iterator[Running]:
    with running(config) as live:
        yield live


def _login_reply(server: Running, user: str, password: str, source: str | None = None, host: str | None = None) -> str:
    ftp = ftplib.FTP(timeout=20, source_address=(source, 0) if source else None)
    ftp.connect(host or server.host, server.port)
    try:
        ftp.login(user, password)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        ftp.close()
    return "230"


# --- logins and the address allowlist -------------------------------------------------------------------------


def test_wrong_password_unknown_user_and_disallowed_address_get_the_same_reply(
    write_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def only_localhost(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["accounts"]["sandbox"]["allowed_ips"] = ["127.0.0.1/32"]

    caplog.set_level("INFO", logger="lcsync")
    with running(load_config(write_config(only_localhost))) as server:
        assert _login_reply(server, "acme-sandbox", "nope") == REFUSED
        assert _login_reply(server, "no-such-user", "whatever") == REFUSED
        assert _login_reply(server, "acme-sandbox", PASSWORDS[("acme", "sandbox")], source="127.0.0.2") == REFUSED
        assert _login_reply(server, "acme-sandbox", PASSWORDS[("acme", "sandbox")], source="127.0.0.1") == "230"
    reasons = [r.fields["reason"] for r in caplog.records if getattr(r, "fields", None) and r.msg == "login_failed"]
    assert reasons == ["wrong password", "unknown user", "address not allowed"]
    assert "acme-sandbox-secret" not in caplog.text and "nope" not in caplog.text


def test_disallowed_address_is_refused_without_hashing(write_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import server.authorizer as authorizer

    calls: list[str] = []
    real = authorizer.verify_password
    monkeypatch.setattr(authorizer, "verify_password", lambda h, p: calls.append(p) or real(h, p))

    def only_localhost(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["allowed_ips"] = ["127.0.0.1"]

    with running(load_config(write_config(only_localhost))) as server:
        assert _login_reply(server, "acme-sandbox", "guess", source="127.0.0.3") == REFUSED
        assert calls == []  # refused before any argon2id work
        assert _login_reply(server, "acme-sandbox", "guess", source="127.0.0.1") == REFUSED
        assert calls == ["guess"]


def test_ipv6_loopback_is_checked_against_the_allowlist(write_config: Any) -> None:
    def dual(data: dict[str, Any]) -> None:
        data["server"]["listen"] = ["127.0.0.1:0", "[::1]:0"]
        data["clients"]["acme"]["accounts"]["sandbox"]["allowed_ips"] = ["127.0.0.1"]
        data["clients"]["globex"]["accounts"]["sandbox"]["allowed_ips"] = ["::1/128"]

    with running(load_config(write_config(dual))) as server:
        v6_port = server.service.ftp.addresses[1][1]
        v6 = Running(server.service, "::1", v6_port)
        assert _login_reply(v6, "acme-sandbox", PASSWORDS[("acme", "sandbox")]) == REFUSED
        assert _login_reply(v6, "globex-sandbox", PASSWORDS[("globex", "sandbox")]) == "230"
        assert _login_reply(server, "globex-sandbox", PASSWORDS[("globex", "sandbox")]) == REFUSED


def test_ipv4_client_on_a_dual_stack_socket_matches_its_ipv4_entry(write_config: Any) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 sockets on this machine")

    def dual_stack(data: dict[str, Any]) -> None:
        data["server"]["listen"] = ["[::]:0"]
        data["clients"]["acme"]["accounts"]["sandbox"]["allowed_ips"] = ["127.0.0.1"]

    with running(load_config(write_config(dual_stack))) as server:
        assert _login_reply(server, "acme-sandbox", PASSWORDS[("acme", "sandbox")], host="127.0.0.1") == "230"


def test_repeated_failures_ban_the_address_across_connections(
    write_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def loopback(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["allowed_ips"] = ["127.0.0.0/8"]

    caplog.set_level("INFO", logger="lcsync")
    config = load_config(write_config(loopback, ban={"failures": 3, "within": "10m", "for": "30m"}))
    with running(config) as server:
        for _ in range(3):
            assert _login_reply(server, "acme-sandbox", "wrong", source="127.0.0.5") == REFUSED
        banned = ftplib.FTP(timeout=20, source_address=("127.0.0.5", 0))
        with pytest.raises(ftplib.error_temp, match="^421 Too many failed logins"):
            banned.connect(server.host, server.port)
        banned.close()
        # Another address is not affected.
        assert _login_reply(server, "acme-sandbox", PASSWORDS[("acme", "sandbox")], source="127.0.0.6") == "230"
    assert "ip_banned" in caplog.text
    assert "connect_refused_banned" in caplog.text


def test_a_verified_password_is_cached_without_the_password(server: Running) -> None:
    connect(server, "acme", "sandbox").quit()
    cache = server.service.ftp.authorizer._cache
    assert list(cache) == ["acme-sandbox"]
    assert PASSWORDS[("acme", "sandbox")].encode() not in b"".join(cache.values())
    with pytest.raises(ftplib.error_perm, match="530"):
        connect(server, "acme", "sandbox", password="not-the-password")


def test_reload_changes_accounts_without_dropping_connections(write_config: Any) -> None:
    with running(load_config(write_config())) as server:
        ftp = connect(server, "acme", "sandbox")

        def lock_out(data: dict[str, Any]) -> None:
            data["clients"]["acme"]["accounts"]["sandbox"]["allowed_ips"] = ["192.0.2.1"]

        server.service.ftp.reload(load_config(write_config(lock_out)))
        assert ftp.nlst() == ["reports", "results", "upload"] or sorted(ftp.nlst()) == ["reports", "results", "upload"]
        ftp.quit()
        with pytest.raises(ftplib.error_perm, match="530"):
            connect(server, "acme", "sandbox")


# --- TLS ---------------------------------------------------------------------------------------------------------


def test_production_refuses_user_before_auth_tls(server: Running) -> None:
    ftp = ftplib.FTP(timeout=20)
    ftp.connect(server.host, server.port)
    with pytest.raises(ftplib.error_perm, match="^550 SSL/TLS required on the control channel"):
        ftp.login("acme", PASSWORDS[("acme", "production")])
    ftp.close()


def test_production_refuses_a_data_connection_without_prot_p(server: Running) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    ftp = ftplib.FTP_TLS(context=context, timeout=20)
    ftp.connect(server.host, server.port)
    ftp.login("acme", PASSWORDS[("acme", "production")])
    ftp.voidcmd("PBSZ 0")
    ftp.voidcmd("PROT C")
    with pytest.raises(ftplib.error_perm, match="^550 SSL/TLS required on the data channel"):
        ftp.nlst()
    ftp.prot_p()
    assert sorted(ftp.nlst()) == ["reports", "results", "upload"]
    ftp.quit()


def test_tls_older_than_1_2_is_refused(server: Running) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            pytest.skip("this OpenSSL cannot offer TLS 1.1 at all")
    ftp = ftplib.FTP_TLS(context=context, timeout=20)
    ftp.connect(server.host, server.port)
    # The alert comes from the server: the client did offer TLS 1.1, and the server refused it.
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        ftp.auth()
    ftp.close()


class _ReusingFTP_TLS(ftplib.FTP_TLS):
    """An FTPS client that resumes the control connection's TLS session on data connections, as FileZilla does."""

    reused: list[bool]

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)  # type: ignore[union-attr]
            self.reused.append(conn.session_reused)
        return conn, size


def test_data_connections_resume_the_control_tls_session(server: Running) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2 session ids: the case FileZilla insists on
    ftp = _ReusingFTP_TLS(context=context, timeout=20)
    ftp.reused = []
    ftp.connect(server.host, server.port)
    ftp.login("acme", PASSWORDS[("acme", "production")])
    ftp.prot_p()
    upload(ftp, "upload/acme_users.csv", user_data(10))
    ftp.nlst("upload")
    ftp.quit()
    assert ftp.reused == [True, True]


def test_reload_takes_a_new_certificate(write_config: Any, tmp_path: Any) -> None:
    from server.tls import generate_self_signed

    with running(load_config(write_config())) as server:
        before = ssl.get_server_certificate((server.host, server.port)) if False else _peer_cert(server)
        cert, key = tmp_path / "new.crt", tmp_path / "new.key"
        generate_self_signed(cert, key, hostname="renewed.example")
        server.service.ftp.reload(load_config(write_config(tls={"cert": str(cert), "key": str(key)})))
        after = _peer_cert(server)
        assert before != after
        assert after == ssl.PEM_cert_to_DER_cert(cert.read_text())


def _peer_cert(server: Running) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    ftp = ftplib.FTP_TLS(context=context, timeout=20)
    ftp.connect(server.host, server.port)
    ftp.auth()
    der = ftp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    ftp.close()
    assert der is not None
    return der


# --- names and places ------------------------------------------------------------------------------------------


def test_a_name_outside_the_pattern_is_refused_with_the_expected_pattern(server: Running) -> None:
    ftp = connect(server)
    with pytest.raises(ftplib.error_perm, match=r"^553 File name not allowed: expected acme_users\*\.csv$"):
        upload(ftp, "upload/payroll.csv", b"x")
    with pytest.raises(ftplib.error_perm, match="^553"):
        upload(ftp, "upload/globex_users.csv", b"x")
    assert ftp.nlst("upload") == []
    ftp.quit()
    assert server.jobs("sandbox") == []


@pytest.mark.parametrize(
    "command,expected",
    [
        ("STOR reports/acme_users.csv", "550"),
        ("STOR results/acme_users.csv", "550"),
        ("STOR acme_users.csv", "550"),
        ("MKD upload/sub", "550"),
        ("RMD upload", "550"),
        ("DELE upload", "550"),
        ("SITE CHMOD 777 upload", "550"),
        ("STOU", "550"),
    ],
)
def test_only_the_allowed_operations_work_in_each_folder(server: Running, command: str, expected: str) -> None:
    ftp = connect(server)
    if command.startswith(("STOR", "STOU")):
        with pytest.raises(ftplib.error_perm, match=f"^{expected}"):
            ftp.storbinary(command, io.BytesIO(b"x"))
    else:
        with pytest.raises(ftplib.error_perm, match=f"^{expected}"):
            ftp.sendcmd(command)
    ftp.quit()


def test_a_queued_upload_cannot_be_deleted_or_renamed(server: Running) -> None:
    ftp = connect(server)
    upload(ftp, "upload/acme_users.csv", user_data(5))
    with pytest.raises(ftplib.error_perm, match="^550 A file waiting for import cannot be deleted"):
        ftp.delete("upload/acme_users.csv")
    with pytest.raises(ftplib.error_perm, match="^550 Only a temporary upload"):
        ftp.rename("upload/acme_users.csv", "upload/acme_users2.csv")
    ftp.quit()
    assert (server.home("sandbox") / "upload" / "acme_users.csv").exists()


def test_a_temporary_upload_cannot_be_renamed_to_a_wrong_name(server: Running) -> None:
    ftp = connect(server)
    upload(ftp, "upload/acme_users.csv.part", user_data(5))
    with pytest.raises(ftplib.error_perm, match=r"^553 File name not allowed: expected acme_users\*\.csv"):
        ftp.rename("upload/acme_users.csv.part", "upload/other.csv")
    with pytest.raises(ftplib.error_perm, match="^55[03]"):
        ftp.rename("upload/acme_users.csv.part", "reports/acme_users.csv")
    assert ftp.delete("upload/acme_users.csv.part").startswith("250")  # the client can tidy its own temporary file
    assert ftp.nlst("upload") == []
    ftp.quit()
    assert server.jobs("sandbox") == []


def test_resuming_an_upload_is_refused(server: Running) -> None:
    ftp = connect(server)
    upload(ftp, "upload/acme_users.csv.part", user_data(5))
    with pytest.raises(ftplib.error_perm, match="^550 Resuming an upload is not supported"):
        ftp.storbinary("APPE upload/acme_users.csv.part", io.BytesIO(b"more"))
    ftp.voidcmd("TYPE I")
    with pytest.raises(ftplib.error_perm, match="^550 Resuming an upload is not supported"):
        ftp.storbinary("STOR upload/acme_users.csv.part", io.BytesIO(b"more"), rest=10)
    ftp.quit()


ESCAPES = [
    "../", "../..", "/..", "/../../..", "../globex", "../../production/acme", "upload/../../globex",
    "/../../../../etc", "..\\..", "upload/../../../tls", "//etc", "/etc", "~", "~root",
]  # fmt: skip


@pytest.mark.parametrize("path", ESCAPES)
def test_no_path_leaves_the_home(server: Running, path: str) -> None:
    ftp = connect(server)
    with contextlib.suppress(ftplib.error_perm):
        ftp.cwd(path)
    assert ftp.pwd() == "/"
    with pytest.raises(ftplib.error_perm):
        download(ftp, f"{path.rstrip('/')}/passwd")
    try:
        listed = ftp.nlst(path)
    except ftplib.error_perm:
        listed = []
    assert set(os.path.basename(name) for name in listed) <= {"upload", "reports", "results"}
    ftp.quit()


def test_symbolic_links_are_never_followed(server: Running, tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("operator only")
    reports = server.home("sandbox") / "reports"
    os.symlink(secret, reports / "leak.csv")
    os.symlink(server.home("sandbox", "globex"), reports / "globex")
    os.symlink(secret, server.home("sandbox") / "upload" / "acme_users.csv")
    ftp = connect(server)
    assert ftp.nlst("reports") == []
    assert ftp.nlst("upload") == []
    for path in ("reports/leak.csv", "upload/acme_users.csv", "reports/globex/upload"):
        with pytest.raises(ftplib.error_perm):
            download(ftp, path)
    with pytest.raises(ftplib.error_perm):
        ftp.cwd("reports/globex")
    ftp.quit()
    server.service.watcher.scan_once()
    assert server.jobs("sandbox") == []


def test_size_and_mdtm_follow_an_upload_to_a_waiting_name(server: Running) -> None:
    ftp = connect(server)
    upload(ftp, "upload/acme_users.csv", user_data(40))
    wait_for(lambda: server.jobs("sandbox"), what="the upload's job")
    upload(ftp, "upload/acme_users.csv", user_data(41))
    assert ftp.size("upload/acme_users.csv") == len(user_data(41))
    ftp.quit()
