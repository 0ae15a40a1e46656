"""An upload counts only when every byte arrived: killed, reset and unterminated-TLS uploads are never queued."""

from __future__ import annotations

import contextlib
import ftplib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORDS, USERNAMES
from serving import Running, connect, running, upload, user_data, wait_for

from core.config import Config

CLIENT = textwrap.dedent(
    """
    import ftplib, os, signal, socket, ssl, struct, sys
    host, port, user, password, mode, how = sys.argv[1:7]
    port, tls = int(port), mode == "tls"
    if tls:
        context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
        ftp = ftplib.FTP_TLS(context=context, timeout=20)
    else:
        ftp = ftplib.FTP(timeout=20)
    ftp.connect(host, port)
    if tls:
        ftp.auth()
    ftp.login(user, password)
    if tls:
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR upload/acme_users.csv")
    for _ in range(40):
        conn.sendall(b"000123,Zoe,O'Brien,zoe@example.com,Active\\r\\n" * 1500)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raw = conn.unwrap() if False else conn
    if how == "reset":
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    elif how == "no-close-notify":
        socket.socket(fileno=os.dup(raw.fileno())).close()
        raw.close()
    try:
        print(ftp.getresp())
    except ftplib.all_errors as exc:
        print(exc)
    """
)


@pytest.fixture
def server(config: Config) -> Iterator[Running]:
    with running(config) as live:
        yield live


def _send(server: Running, env: str, tls: bool, how: str) -> str:
    user, password = USERNAMES[("acme", env)], PASSWORDS[("acme", env)]
    args = [sys.executable, "-c", CLIENT, server.host, str(server.port), user, password, "tls" if tls else "plain", how]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip()


def _assert_discarded(server: Running, env: str, caplog: pytest.LogCaptureFixture) -> None:
    incoming = server.service.layout.incoming_dir(env, "acme")
    wait_for(lambda: "upload_incomplete" in caplog.text, what="the incomplete upload to be logged")
    wait_for(lambda: not any(incoming.iterdir()), what="the partial file to be removed")
    assert list((server.home(env) / "upload").iterdir()) == []
    server.service.watcher.scan_once()
    assert server.jobs(env) == []


CASES = [
    ("sandbox", False, "kill"),
    ("sandbox", False, "reset"),
    ("production", True, "kill"),
    ("production", True, "reset"),
    ("production", True, "no-close-notify"),
    ("sandbox", True, "no-close-notify"),
]


@pytest.mark.parametrize("env,tls,how", CASES)
def test_interrupted_upload_is_discarded_and_never_queued(
    server: Running, caplog: pytest.LogCaptureFixture, env: str, tls: bool, how: str
) -> None:
    caplog.set_level("INFO", logger="lcsync.ftp")
    reply = _send(server, env, tls, how)
    if how != "kill":  # a client that is still there is told to send the file again
        # 425 when the reset reached the server before it had even accepted the data connection
        assert reply.startswith(("451 Upload incomplete", "425 The data connection was lost")), reply
    _assert_discarded(server, env, caplog)


def test_client_can_retry_after_an_incomplete_upload(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="lcsync.ftp")
    _send(server, "sandbox", False, "reset")
    _assert_discarded(server, "sandbox", caplog)
    ftp = connect(server, "acme", "sandbox")
    data = user_data(100)
    assert upload(ftp, "upload/acme_users.csv", data).startswith("226")
    ftp.quit()
    jobs = wait_for(lambda: server.jobs("sandbox"), what="the retried upload's job")
    assert [job.size for job in jobs] == [len(data)]


def test_upload_over_the_size_limit_is_refused_and_discarded(write_config, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from core.config import load_config

    caplog.set_level("INFO", logger="lcsync.ftp")
    with running(load_config(write_config(max_upload_size="64KiB"))) as server:
        ftp = connect(server, "acme", "sandbox")
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("STOR upload/acme_users.csv")
        with contextlib.suppress(OSError):  # the server stops reading at the limit; the client may see a reset
            conn.sendall(user_data(20000))
        conn.close()
        with pytest.raises(ftplib.error_perm, match="^552 Upload refused: the file is larger than the 65536-byte"):
            ftp.voidresp()
        ftp.quit()
        _assert_discarded(server, "sandbox", caplog)


def test_complete_upload_is_queued_exactly_once_when_the_watcher_sees_it_too(server: Running) -> None:
    ftp = connect(server, "acme", "sandbox")
    upload(ftp, "upload/acme_users.csv", user_data(300))
    ftp.quit()
    wait_for(lambda: server.jobs("sandbox"), what="the upload's job")
    for _ in range(3):  # the rename into upload/ is seen by the watcher, and sweeps look again
        server.service.watcher.scan_once()
    assert len(server.jobs("sandbox")) == 1
    assert Path(server.home("sandbox") / "upload" / "acme_users.csv").exists()
