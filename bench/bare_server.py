"""Bare pyftpdlib, the reference lcsync is held to: run as ``python -m bench.bare_server`` by the bench.

A stock FTPServer (or ThreadedFTPServer) with TLS_FTPHandler and a DummyAuthorizer, TLS optional on the control
connection so plain FTP and explicit FTPS are served by one process. Only pyftpdlib's defaults, nothing tuned.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer, ThreadedFTPServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--passive", default="61000-61999")
    parser.add_argument("--threaded", action="store_true", help="ThreadedFTPServer instead of the async FTPServer")
    args = parser.parse_args(argv)

    # Logging is left at pyftpdlib's default (INFO: each connection, login and transfer, to stderr, which the bench
    # sends to a file), as lcsync logs each of those too.
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm="elradfmwMT")

    class Handler(TLS_FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.certfile = args.cert
    Handler.keyfile = args.key
    Handler.tls_control_required = False
    Handler.tls_data_required = False
    low, high = (int(x) for x in args.passive.split("-"))
    Handler.passive_ports = range(low, high + 1)
    Handler.masquerade_address = "127.0.0.1"

    server_class = ThreadedFTPServer if args.threaded else FTPServer
    server = server_class(("127.0.0.1", args.port), Handler)
    server.max_cons = 0
    server.max_cons_per_ip = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        server.close_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(handle_exit=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
