"""The FTP/FTPS session: login policy, TLS policy, upload names, complete-upload detection and the audit log.

``build_handler`` makes a fresh subclass per server, so no server shares class state with another.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from pyftpdlib.exceptions import _FileReadWriteError, _RetryError
from pyftpdlib.handlers import DTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.log import logger as ftplog

from core.config import is_temporary_name
from core.layout import Layout
from core.log import event
from core.metrics import METRICS
from server.authorizer import Account, Authorizer
from server.bans import BanList
from server.filesystem import HomeFS, SizeLimitedFile

log = logging.getLogger("lcsync.ftp")

# After a plain-FTP data connection ends, how long to watch the control connection for the client vanishing too. A
# killed client's data connection ends exactly like a complete upload; the tell is that its control connection ends
# at the same moment (the kernel closes both) instead of waiting for the 226. Both ends are sent together, so a few
# round trips are enough: the wait is three times the connection's smoothed RTT plus 2 ms, within these bounds.
GRACE_MIN_SECONDS = 0.005
GRACE_MAX_SECONDS = 0.25

TRANSFER_COMMANDS = frozenset({"APPE", "LIST", "MLSD", "NLST", "RETR", "STOR", "STOU"})
_RETRY_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}

OnUpload = Callable[[Account, Path, str, str], None]  # (account, path in upload/, username, remote ip)


class UploadDTPHandler(TLS_DTPHandler):
    """A data channel that tells a complete upload from one that merely stopped."""

    ac_in_buffer_size = 262144  # fewer, larger reads and writes than pyftpdlib's 64 KiB for large uploads
    transfer_finished: bool  # pyftpdlib's state, declared for mypy
    receive: bool
    _verdict_given = False
    _reset: str | None = None

    def __init__(self, sock: Any, cmd_channel: Any) -> None:
        super().__init__(sock, cmd_channel)
        if not self.connected:  # the client reset it between connect and accept; pyftpdlib would wait forever
            cmd_channel.data_connection_failed()

    def recv(self, buffer_size: int) -> bytes:
        if isinstance(self.socket, SSL.Connection):
            return super().recv(buffer_size)
        # pyftpdlib reads a reset like a clean end of stream; on plain FTP that would pass a cut file as complete.
        try:
            data = self.socket.recv(buffer_size)
        except OSError as err:
            if err.errno in _RETRY_ERRNOS:
                raise _RetryError from err
            self._reset = f"data connection lost: {os.strerror(err.errno) if err.errno else err}"
            self.handle_close()
            return b""
        if not data:
            self.handle_close()
        return data

    def close(self) -> None:
        if self._ssl_accepting and not self._error and not self._closed and self._finish_handshake():
            return  # closed once the handshake completes (handle_ssl_established) or fails
        if not self._verdict_given and not self._closed:
            self._verdict_given = True
            if self.receive and self.transfer_finished and self.file_obj is not None:
                problem = self._incomplete_reason()
                if problem:
                    self.transfer_finished = False
                    self.cmd_channel.upload_problem = problem
                    reply = f"451 Upload incomplete ({problem}); the file was discarded, send it again."
                    self._resp = (reply, ftplog.debug)
        super().close()

    _close_deferred = False

    def handle_error(self) -> None:
        # SSLConnectionMixin's handle_error (first in the MRO) closes without any reply, leaving the client waiting
        # for one; DTPHandler's answers 426. Both paths must end with a reply.
        self._error = True
        exc = sys.exc_info()[1]
        cause = getattr(exc, "__cause__", None)
        if isinstance(exc, _FileReadWriteError) and isinstance(cause, OSError) and cause.errno == errno.EFBIG:
            limit = self.cmd_channel.max_upload_size
            self.cmd_channel.upload_problem = f"larger than the {limit}-byte upload limit"
            self._resp = (f"552 Upload refused: the file is larger than the {limit}-byte limit.", ftplog.warning)
            self.close()
            return
        DTPHandler.handle_error(self)

    def _finish_handshake(self) -> bool:
        """Complete a TLS handshake still in progress before closing; True when the close must wait for it.

        pyftpdlib closes a data connection that has nothing to send (an empty listing) as soon as it can, which can
        be before it has noticed that the handshake finished. It then drops the TCP connection without close_notify,
        and clients such as Python's ftplib fail the listing ("shutdown while in init").
        """
        if self._close_deferred:
            return False
        try:
            self.socket.do_handshake()
        except (SSL.WantReadError, SSL.WantWriteError):
            self._close_deferred = True
            self.ioloop.call_later(5.0, self._give_up_handshake, _errback=self.handle_error)
            return True
        except (SSL.Error, OSError):
            return False
        self._ssl_accepting = False
        self._ssl_established = True
        return False

    def handle_ssl_established(self) -> None:
        if self._close_deferred:
            self.close()

    def _give_up_handshake(self) -> None:
        if not self._closed:
            self._error = True
            self.close()

    def _incomplete_reason(self) -> str | None:
        if self._reset:
            return self._reset
        if isinstance(self.socket, SSL.Connection):
            # Under TLS only the client's close_notify proves the stream ended where the client meant it to.
            if not self.socket.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
                return "TLS data connection closed without close_notify"
            return None
        if control_connection_lost(self.cmd_channel.socket, grace_seconds(self.socket)):
            return "client disconnected with the data connection"
        return None


def grace_seconds(sock: Any) -> float:
    """How long to wait for a vanishing client's control connection to end: a few of this connection's RTTs."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        rtt_us = struct.unpack_from("I", info, 68)[0]  # struct tcp_info: 8 bytes of flags, then tcpi_rtt is u32 #15
    except (OSError, struct.error, AttributeError):
        return GRACE_MAX_SECONDS
    return min(GRACE_MAX_SECONDS, max(GRACE_MIN_SECONDS, 3 * rtt_us / 1e6 + 0.002))


def control_connection_lost(sock: Any, grace: float) -> bool:
    """Whether the peer of the control connection ``sock`` closes or resets it within ``grace`` seconds."""
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], grace)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        if isinstance(sock, SSL.Connection):
            return sock.recv(1, socket.MSG_PEEK) == b""
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (SSL.WantReadError, BlockingIOError, InterruptedError):
        return False
    except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error, OSError):
        return True


class LcsyncFTPHandler(TLS_FTPHandler):
    """One client session. Class attributes are set per server by ``build_handler``."""

    dtp_handler = UploadDTPHandler
    abstracted_fs = HomeFS
    banner = "lcsync FTP service ready."
    use_sendfile = True
    permit_foreign_addresses = False
    tls_control_required = False  # decided per account, see ftp_USER
    tls_data_required = False  # decided per account, see process_command

    # pyftpdlib's session state that this class reads or resets (pyftpdlib ships no type hints)
    _in_dtp_queue: Any
    _out_dtp_queue: Any
    _restart_position: int
    _current_type: str
    _rnfr: str | None
    _idler: Any

    sessions: weakref.WeakSet[LcsyncFTPHandler] | None = None  # live sessions, for a graceful stop
    layout: Layout
    bans: BanList
    authorizer: Authorizer
    max_upload_size: int
    on_upload: OnUpload

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        super().__init__(conn, server, ioloop)
        self.account: Account | None = None
        self.login_failure_reason: str | None = None
        self.upload_problem: str | None = None
        self.incoming: dict[str, str] = {}  # in-flight file under incoming/ -> its path in upload/
        self.on_acceptor_loop = False  # True for a session from an address no account allows (see ftpserver)
        if self.sessions is not None:
            self.sessions.add(self)

    # --- connection and login ------------------------------------------------------------------------------------

    def add_channel(self, map: Any = None, events: Any = None) -> None:
        # ThreadedFTPServer builds the session on the acceptor's loop, whose scheduler then holds the idle timer, and
        # hands the session to a thread of its own. Left there, the timer would fire from the acceptor's thread into
        # a session another thread owns; re-create it on the session's own loop.
        super().add_channel(map, events)
        idler = self._idler
        if idler is not None and not idler.cancelled and idler._sched is not self.ioloop.sched:
            idler.cancel()
            self._idler = self.ioloop.call_later(self.timeout, self.handle_timeout, _errback=self.handle_error)

    def handle(self) -> None:
        left = self.bans.banned_for(self.remote_ip)
        if left:
            event(log, "connect_refused_banned", logging.WARNING, ip=self.remote_ip, ban_left_s=round(left))
            minutes = max(1, round(left / 60))
            self.respond(f"421 Too many failed logins from your address; try again in {minutes} minute(s).")
            # Close now, as pyftpdlib does for too many connections: the reply fits in the fresh socket's buffer.
            self.close()
            return
        # Decided before the greeting, so the flag is set before the client can send anything (see ftpserver).
        self.on_acceptor_loop = not self.authorizer.may_log_in_from(self.remote_ip)
        event(log, "connect", ip=self.remote_ip, port=self.remote_port)
        METRICS.inc("lcsync_connections_total")
        super().handle()

    def handle_max_cons(self) -> None:
        event(log, "connect_refused_limit", logging.WARNING, ip=self.remote_ip, limit="max_connections")
        super().handle_max_cons()

    def handle_max_cons_per_ip(self) -> None:
        event(log, "connect_refused_limit", logging.WARNING, ip=self.remote_ip, limit="max_connections_per_ip")
        super().handle_max_cons_per_ip()

    def ftp_USER(self, line: str) -> None:
        account = self.authorizer.account(line)
        if account is not None and account.require_tls and not self._ssl_established:
            msg = "SSL/TLS required on the control channel: send AUTH TLS before USER."
            self.respond("550 " + msg)
            event(log, "login_failed", ip=self.remote_ip, user=line, reason="TLS required")
            return
        super().ftp_USER(line)

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        self.account = self.authorizer.account(self.username)
        super().handle_auth_success(home, "", msg_login)  # never keep the password on the session

    def on_login(self, username: str) -> None:
        account = self.account
        assert account is not None
        METRICS.inc("lcsync_logins_total", result="ok", env=account.env)
        event(
            log, "login", user=username, client=account.client_id, env=account.env,
            ip=self.remote_ip, tls=bool(self._ssl_established),
        )  # fmt: skip

    def on_login_failed(self, username: str, password: str) -> None:
        METRICS.inc("lcsync_logins_total", result="refused", reason=self.login_failure_reason or "unknown")
        event(
            log, "login_failed", logging.WARNING, user=username, ip=self.remote_ip,
            reason=self.login_failure_reason or "authentication failed",
        )  # fmt: skip
        self.login_failure_reason = None

    def on_logout(self, username: str) -> None:
        event(log, "logout", user=username, ip=self.remote_ip)

    def on_disconnect(self) -> None:
        for temporary, final in list(self.incoming.items()):  # a STOR whose data connection never came
            self.incoming.pop(temporary, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
                event(log, "upload_incomplete", logging.WARNING, user=self.username, ip=self.remote_ip,
                      path=os.path.basename(final), bytes=0, reason="session ended before the data arrived",
                      action="discarded")  # fmt: skip
        event(log, "disconnect", ip=self.remote_ip, user=self.username or None)

    # --- policy on commands ----------------------------------------------------------------------------------------

    _data_connection_lost = False

    def data_connection_failed(self) -> None:
        """The data connection died before it could be used: answer the transfer command waiting for it, or the next."""
        reply = "425 The data connection was lost before the transfer started; try again."
        if self._in_dtp_queue is not None:
            file_obj = self._in_dtp_queue[0]
            self._in_dtp_queue = None
            file_obj.close()
            if isinstance(file_obj, SizeLimitedFile):
                self.upload_problem = "data connection lost before the transfer started"
                self.on_incomplete_file_received(file_obj.name)
            self.respond(reply)
        elif self._out_dtp_queue is not None:
            file_obj = self._out_dtp_queue[2]
            self._out_dtp_queue = None
            if file_obj is not None:
                file_obj.close()
            self.respond(reply)
        else:
            self._data_connection_lost = True

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if self._data_connection_lost and cmd in TRANSFER_COMMANDS:
            self._data_connection_lost = False
            self.respond("425 The data connection was lost before the transfer started; try again.")
            return
        account = self.account
        data_command = cmd in ("PASV", "EPSV", "PORT", "EPRT", "LPSV", "LPRT")
        if account is not None and account.require_tls and data_command and not self._prot:
            msg = "SSL/TLS required on the data channel: send PBSZ 0 and PROT P first."
            self.respond("550 " + msg)
            self.log_cmd(cmd, args[0] if args else "", 550, msg)
            return
        super().process_command(cmd, *args, **kwargs)

    def _upload_name_refusal(self, path: str) -> str | None:
        """Why ``path`` (a real path in upload/) may not be written, or None when it may."""
        account = self.account
        assert account is not None
        name = os.path.basename(path)
        if is_temporary_name(name) or account.client.is_import_name(name):
            return None
        if account.client.import_ is None:
            return "553 Uploads are not enabled for this account."
        return f"553 File name not allowed: expected {account.client.import_.file_pattern}"

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if "a" in mode or self._restart_position:
            self._restart_position = 0
            self.respond("550 Resuming an upload is not supported: send the whole file again.")
            return None
        refusal = self._upload_name_refusal(file)
        if refusal:
            self.respond(refusal)
            return None
        self.upload_problem = None
        return super().ftp_STOR(file, mode)

    def ftp_SIZE(self, path: str) -> None:
        # Clients check an upload with SIZE whatever TYPE they are in (vsftpd answers with the stored size too);
        # pyftpdlib refuses SIZE under TYPE A, which makes WinSCP and scripts report a failed upload.
        current, self._current_type = self._current_type, "i"
        try:
            super().ftp_SIZE(path)
        finally:
            self._current_type = current

    def ftp_STOU(self, line: str) -> None:
        self.respond("550 STOU is not supported: upload with the intended file name.")

    def ftp_RNFR(self, path: str) -> None:
        if not is_temporary_name(os.path.basename(path)):
            self.respond("550 Only a temporary upload (.part, .tmp, .filepart) can be renamed.")
            return
        super().ftp_RNFR(path)

    def ftp_RNTO(self, path: str) -> None:
        source = self._rnfr
        if source is not None:
            refusal = None
            if os.path.dirname(source) != os.path.dirname(path):
                refusal = "553 A file can only be renamed within upload/."
            elif is_temporary_name(os.path.basename(path)):
                refusal = "553 Rename a temporary upload to its final name."
            else:
                refusal = self._upload_name_refusal(path)
            if refusal:
                self._rnfr = None
                self.respond(refusal)
                return
        super().ftp_RNTO(path)
        if source is not None and os.path.isfile(path) and not os.path.exists(source):
            event(log, "rename", user=self.username, ip=self.remote_ip, path=self.fs.fs2ftp(path))
            self._queue(Path(path))

    def ftp_DELE(self, path: str) -> None:
        in_upload = os.path.basename(os.path.dirname(path)) == "upload"
        if in_upload and not is_temporary_name(os.path.basename(path)):
            self.respond("550 A file waiting for import cannot be deleted; upload a corrected file to replace it.")
            return
        super().ftp_DELE(path)
        if not os.path.exists(path):
            event(log, "delete", user=self.username, ip=self.remote_ip, path=self.fs.fs2ftp(path))

    # --- uploads and downloads ---------------------------------------------------------------------------------------

    def on_file_received(self, file: str) -> None:
        """A STOR finished with every byte: move it into upload/ and hand it to the queue."""
        target = self._incoming_target(file)
        if target is None:
            return
        os.replace(file, target)
        size = os.path.getsize(target)
        METRICS.inc("lcsync_uploads_total", result="complete")
        METRICS.inc("lcsync_bytes_received_total", size)
        event(
            log, "upload_complete", user=self.username, ip=self.remote_ip, path=self.fs.fs2ftp(str(target)),
            bytes=size,
        )  # fmt: skip
        if not is_temporary_name(target.name):
            self._queue(target)

    def on_incomplete_file_received(self, file: str) -> None:
        target = self._incoming_target(file)
        try:
            received = os.path.getsize(file)
            os.unlink(file)
        except FileNotFoundError:
            received = 0
        METRICS.inc("lcsync_uploads_total", result="incomplete")
        event(
            log, "upload_incomplete", logging.WARNING, user=self.username, ip=self.remote_ip,
            path=self.fs.fs2ftp(str(target)) if target else None, bytes=received,
            reason=self.upload_problem or "connection closed before the upload ended", action="discarded",
        )  # fmt: skip

    def _incoming_target(self, file: str) -> Path | None:
        """The upload/ path that the in-flight file ``file`` (under incoming/) was sent to."""
        final = self.incoming.pop(file, None)
        return Path(final) if final else None

    def _queue(self, path: Path) -> None:
        account = self.account
        assert account is not None
        try:
            self.on_upload(account, path, self.username, self.remote_ip)
        except Exception as exc:  # the file stays in upload/; the watcher's sweep queues it later
            event(log, "queue_deferred", logging.WARNING, path=str(path), reason=str(exc))

    def on_file_sent(self, file: str) -> None:
        with contextlib.suppress(OSError):
            METRICS.inc("lcsync_bytes_sent_total", os.path.getsize(file))
        event(log, "download", user=self.username, ip=self.remote_ip, path=self.fs.fs2ftp(file))

    def on_incomplete_file_sent(self, file: str) -> None:
        event(
            log,
            "download_incomplete",
            logging.WARNING,
            user=self.username,
            ip=self.remote_ip,
            path=self.fs.fs2ftp(file),
        )


def build_handler(
    *,
    authorizer: Authorizer,
    bans: BanList,
    layout: Layout,
    ssl_context: SSL.Context,
    on_upload: OnUpload,
    passive_ports: tuple[int, int],
    masquerade_address: str | None,
    idle_timeout: float,
    data_timeout: float,
    max_upload_size: int,
    auth_failed_delay: float = 3.0,
) -> type[LcsyncFTPHandler]:
    """A handler class (and data-channel class) of this server's own, so no state is shared between servers."""
    dtp = type("ServerDTPHandler", (UploadDTPHandler,), {"timeout": data_timeout})
    return type(
        "ServerFTPHandler",
        (LcsyncFTPHandler,),
        {
            "authorizer": authorizer,
            "bans": bans,
            "layout": layout,
            "ssl_context": ssl_context,
            "on_upload": staticmethod(on_upload),
            "passive_ports": range(passive_ports[0], passive_ports[1] + 1),
            "masquerade_address": masquerade_address,
            "timeout": idle_timeout,
            "dtp_handler": dtp,
            "max_upload_size": max_upload_size,
            "auth_failed_timeout": auth_failed_delay,
        },
    )
