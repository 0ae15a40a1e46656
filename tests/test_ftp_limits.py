"""Connection limits, passive ports and masquerade address, and isolation between sessions."""

from __future__ import annotations

import ftplib
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORDS
from serving import connect, running, upload, user_data, wait_for

from core.config import load_config


def test_connections_per_address_are_limited(write_config: Any) -> None:
    with running(load_config(write_config(max_connections_per_ip=2))) as server:
        first, second = ftplib.FTP(timeout=20), ftplib.FTP(timeout=20)
        first.connect(server.host, server.port)
        second.connect(server.host, server.port)
        third = ftplib.FTP(timeout=20)
        with pytest.raises(ftplib.error_temp, match="^421 Too many connections from the same IP"):
            third.connect(server.host, server.port)
        third.close()
        first.close()
        # A freed place can be taken again.
        wait_for(lambda: _can_log_in(server.host, server.port), what="a freed connection slot")
        second.close()


def _can_log_in(host: str, port: int) -> bool:
    ftp = ftplib.FTP(timeout=20)
    try:
        ftp.connect(host, port)
        ftp.login("acme-sandbox", PASSWORDS[("acme", "sandbox")])
    except ftplib.error_temp:
        return False
    finally:
        ftp.close()
    return True


def test_passive_replies_use_the_port_range_and_masquerade_address(write_config: Any) -> None:
    config = load_config(write_config(passive_ports="61100-61102", masquerade_address="127.0.0.9"))
    with running(config) as server:
        ftp = connect(server)
        ports = set()
        for _ in range(4):
            reply = ftp.sendcmd("PASV")
            numbers = [int(n) for n in re.search(r"\((\d+(?:,\d+){5})\)", reply).group(1).split(",")]  # type: ignore[union-attr]
            assert numbers[:4] == [127, 0, 0, 9]
            ports.add(numbers[4] * 256 + numbers[5])
        assert ports <= {61100, 61101, 61102}
        ftp.quit()
        ftp = connect(server)
        upload(ftp, "upload/acme_users.csv", user_data(20))  # ftplib follows the masquerade address (127.0.0.9)
        ftp.quit()


def test_a_slow_upload_hook_holds_up_only_its_own_session(write_config: Any) -> None:
    release = threading.Event()
    entered = threading.Event()
    with running(load_config(write_config())) as server:
        queue = server.service.ftp.handler.on_upload

        def slow_hook(account: Any, path: Path, username: str, remote_ip: str) -> None:
            if account.client_id == "acme":  # only the first client's hook is slow
                entered.set()
                release.wait(30)
            queue(account, path, username, remote_ip)

        server.service.ftp.handler.on_upload = staticmethod(slow_hook)  # type: ignore[assignment]
        slow = connect(server)
        done: list[str] = []

        def upload_then_noop() -> None:
            upload(slow, "upload/acme_users.csv", user_data(10))
            done.append(slow.sendcmd("NOOP"))  # answered only once this session's hook has returned

        worker = threading.Thread(target=upload_then_noop)
        worker.start()
        assert entered.wait(20)
        # While the first session is stuck in its hook, another client logs in, lists and uploads.
        other = connect(server, "globex", "sandbox")
        assert sorted(other.nlst()) == ["reports", "results", "upload"]
        upload(other, "upload/globex_users.csv", user_data(5))
        other.quit()
        assert done == []
        release.set()
        worker.join(30)
        slow.quit()
        assert done and done[0].startswith("200")


def test_an_idle_session_is_timed_out_by_its_own_thread(write_config: Any) -> None:
    with running(load_config(write_config(idle_timeout="1s"))) as server:
        ftp = connect(server)
        sessions = list(server.service.ftp.sessions)
        assert len(sessions) == 1
        session = sessions[0]
        # The idle timer belongs to the session's own loop, not the acceptor's (which would fire it from another
        # thread into this session).
        assert session._idler._sched is session.ioloop.sched
        with pytest.raises(ftplib.error_temp, match="^421 Control connection timed out"):
            wait_for(lambda: ftp.getresp(), timeout=10, what="the idle timeout")
        ftp.close()
        connect(server).quit()  # the server goes on serving


def test_a_session_from_an_address_no_account_allows_gets_no_thread(write_config: Any) -> None:
    with running(load_config(write_config())) as server:  # every account allows 127.0.0.1 and ::1 only
        stranger = ftplib.FTP(timeout=20, source_address=("127.0.0.7", 0))
        stranger.connect(server.host, server.port)
        assert not [t for t in threading.enumerate() if t.name == "ftp-session-127.0.0.7"]
        session = next(s for s in server.service.ftp.sessions if s.remote_ip == "127.0.0.7")
        assert session.on_acceptor_loop

        # An address allowed by a reload after it connected still never logs in on the acceptor's loop.
        def allow(data: dict[str, Any]) -> None:
            data["clients"]["acme"]["allowed_ips"] = ["127.0.0.0/8"]

        server.service.ftp.reload(load_config(write_config(allow)))
        with pytest.raises(ftplib.error_perm, match="^530 Authentication failed"):
            stranger.login("acme-sandbox", PASSWORDS[("acme", "sandbox")])
        stranger.close()
        # A new connection from it is a normal, threaded session now, and logs in.
        again = ftplib.FTP(timeout=20, source_address=("127.0.0.7", 0))
        again.connect(server.host, server.port)
        again.login("acme-sandbox", PASSWORDS[("acme", "sandbox")])
        again.quit()
