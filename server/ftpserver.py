"""The FTP/FTPS front door: one threaded pyftpdlib server per listen address, reloadable while serving.

Concurrency: a thread per connection (pyftpdlib's ThreadedFTPServer). An argon2id check (~160 ms of CPU), a slow
client or a slow hook then holds up only its own session, where the single-loop FTPServer stalls every client.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer, ThreadedFTPServer

from core.config import Config
from core.layout import Layout
from core.log import event
from server.authorizer import Authorizer
from server.bans import BanList
from server.handler import LcsyncFTPHandler, OnUpload, build_handler
from server.tls import certificate_paths, make_context

log = logging.getLogger("lcsync.ftp")


class _ThreadedServer(ThreadedFTPServer):
    """ThreadedFTPServer without shared state, and without a thread for a connection refused at once."""

    poll_timeout = 1.0  # how often an idle session thread checks for shutdown
    join_timeout = 10

    def __init__(self, address: tuple[str, int], handler: type[LcsyncFTPHandler]) -> None:
        # pyftpdlib keeps the stop flag and lock on the class and defaults to one process-wide IOLoop; two listeners
        # sharing that loop would dispatch one session's events from two threads at once.
        self._lock = threading.Lock()
        self._exit = threading.Event()
        super().__init__(address, handler, ioloop=IOLoop())

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        handler = FTPServer.handle_accepted(self, sock, addr)
        if handler is None or handler._closed:  # banned, or over a connection limit: answered and closed
            return
        if handler.on_acceptor_loop:
            # No account accepts this address, so no login can succeed: the session stays on the acceptor's loop
            # like bare async pyftpdlib (no thread, no blocking work ever: every PASS is refused before any hashing),
            # and a flood from such addresses costs a fraction of a threaded session.
            return
        self.ioloop.unregister(handler._fileno)
        thread = self._start_task(target=self._loop, args=(handler,), name=f"ftp-session-{addr[0]}")
        thread.start()
        with self._lock:
            self._active_tasks.append(thread)


class FtpService:
    """All listeners of one process. ``start()`` binds and serves in background threads; ``stop()`` undoes it."""

    def __init__(
        self,
        config: Config,
        on_upload: OnUpload,
        *,
        cache_logins: bool = True,
        auth_failed_delay: float = 3.0,
    ) -> None:
        self.config = config
        self.bans = BanList(config.server.ban)
        self.authorizer = Authorizer(config, self.bans, cache_logins=cache_logins)
        self.layout = Layout(config.data_dir)
        self.sessions: weakref.WeakSet[LcsyncFTPHandler] = weakref.WeakSet()
        cert, key = certificate_paths(config.server.tls, self.layout.tls_dir)
        self.handler = build_handler(
            authorizer=self.authorizer,
            bans=self.bans,
            layout=self.layout,
            ssl_context=make_context(cert, key),
            on_upload=on_upload,
            passive_ports=config.server.passive_ports,
            masquerade_address=config.server.masquerade_address,
            idle_timeout=config.server.idle_timeout,
            data_timeout=config.server.data_timeout,
            max_upload_size=config.server.max_upload_size,
            auth_failed_delay=auth_failed_delay,
        )
        self.handler.sessions = self.sessions
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stop_accepting = threading.Event()
        self._stopping = threading.Event()
        self._listeners_closed = threading.Semaphore(0)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) each listener is bound to; port 0 in the configuration becomes the real port here."""
        return [server.address[:2] for server in self._servers]

    def start(self) -> None:
        for listen in self.config.server.listen:
            server = _ThreadedServer((listen.host, listen.port), self.handler)
            server.max_cons = self.config.server.max_connections
            server.max_cons_per_ip = self.config.server.max_connections_per_ip
            self._servers.append(server)
            event(log, "listening", host=server.address[0], port=server.address[1])
        for server in self._servers:
            thread = threading.Thread(target=self._serve, args=(server,), name=f"ftp-accept-{server.address[1]}")
            thread.start()
            self._threads.append(thread)

    def _serve(self, server: Any) -> None:
        while not self._stop_accepting.is_set():
            server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        server.close()  # the listening socket: new clients are refused from here on
        self._listeners_closed.release()
        self._stopping.wait()
        server.close_all()  # every session thread stops; a transfer still running is aborted and discarded

    def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop accepting; let running transfers finish for up to ``drain_seconds``; then close every session."""
        self._stop_accepting.set()
        for _ in self._threads:
            self._listeners_closed.acquire()
        event(log, "listeners_closed", sessions=len(self.sessions))
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and any(s.data_channel is not None for s in list(self.sessions)):
            time.sleep(0.1)
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._servers.clear()
        event(log, "stopped")

    def reload(self, config: Config) -> None:
        """Take a new configuration: accounts, allowlists, ban policy and the certificate; connections stay up."""
        cert, key = certificate_paths(config.server.tls, Layout(config.data_dir).tls_dir)
        context = make_context(cert, key)
        self.authorizer.update_config(config)
        self.bans.update_policy(config.server.ban)
        self.handler.ssl_context = context
        self.config = config
        event(log, "reloaded", accounts=sum(1 for _ in config.accounts()))
