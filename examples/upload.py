#!/usr/bin/env python3
"""Upload one User Data file to an lcsync upload/ folder with Python's ftplib, retrying with backoff.

    upload.py [--tls] [--insecure | --cafile FILE] [--host H] [--port P] [--user U] [--name REMOTE] FILE

Settings come from the options or from the environment (the same variables as upload-curl.sh):
LCSYNC_HOST (127.0.0.1), LCSYNC_PORT (2121), LCSYNC_USER (demo-sandbox), LCSYNC_PASSWORD (required unless the user
is one of the demo accounts of the sample accounts.yaml), LCSYNC_TLS=1, LCSYNC_INSECURE=1, LCSYNC_CACERT,
LCSYNC_TRIES (5), LCSYNC_DELAY (10 seconds before the first retry, doubled each time, at most 300).

After the server confirms the upload (226), the script asks for the file's SIZE and compares it with the local
file. A sandbox import may take the file out of upload/ within seconds; a SIZE refused because the file is no longer
there is then reported, not treated as a failure, since the 226 already confirmed every byte.

Exit status: 0 on success; 1 when every attempt failed or the server refused for a reason a retry cannot fix (login
refused, file name not allowed, certificate not trusted); 2 on a usage error. Needs Python 3.8 or newer, nothing else.
"""

from __future__ import annotations

import argparse
import ftplib
import os
import ssl
import sys
import time
from datetime import datetime

DEMO_PASSWORDS = {"demo-sandbox": "demo-sandbox-2026", "demo": "demo-production-2026"}  # the documented demo only


class Permanent(Exception):
    """A failure that a retry cannot fix."""


def log(message: str) -> None:
    print(f"{datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z} upload.py: {message}", file=sys.stderr, flush=True)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the local file to upload")
    parser.add_argument("--host", default=os.environ.get("LCSYNC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LCSYNC_PORT", "2121")))
    parser.add_argument("--user", default=os.environ.get("LCSYNC_USER", "demo-sandbox"))
    parser.add_argument("--name", help="the name on the server (default: the local file's name)")
    parser.add_argument("--tls", action="store_true", default=env_flag("LCSYNC_TLS"), help="explicit FTPS")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=env_flag("LCSYNC_INSECURE"),
        help="do not check the server's certificate (the demo's self-signed one)",
    )
    parser.add_argument("--cafile", default=os.environ.get("LCSYNC_CACERT"), help="trust this CA/certificate file")
    parser.add_argument("--tries", type=int, default=int(os.environ.get("LCSYNC_TRIES", "5")))
    parser.add_argument("--delay", type=float, default=float(os.environ.get("LCSYNC_DELAY", "10")))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before giving up")
    args = parser.parse_args(argv)
    args.password = os.environ.get("LCSYNC_PASSWORD") or DEMO_PASSWORDS.get(args.user)
    if not args.password:
        parser.error(f"set LCSYNC_PASSWORD for user {args.user}")
    if not os.path.isfile(args.file):
        parser.error(f"cannot read {args.file}")
    args.name = args.name or os.path.basename(args.file)
    return args


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=args.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect(args: argparse.Namespace) -> ftplib.FTP:
    ftp: ftplib.FTP
    if args.tls:
        ftp = ftplib.FTP_TLS(context=tls_context(args), timeout=args.timeout)
    else:
        ftp = ftplib.FTP(timeout=args.timeout)
    ftp.connect(args.host, args.port)
    try:
        ftp.login(args.user, args.password)  # FTP_TLS sends AUTH TLS before USER
    except ftplib.error_perm as exc:
        ftp.close()
        raise Permanent(
            f"login refused: {exc} (wrong password, address not allowed, or TLS required: try --tls). "
            "Not retrying: repeated failed logins get this address banned."
        ) from exc
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()  # PBSZ 0 + PROT P: the data connections are encrypted too
    ftp.set_pasv(True)
    return ftp


def upload_once(args: argparse.Namespace) -> None:
    local_size = os.path.getsize(args.file)
    ftp = connect(args)
    try:
        ftp.cwd("upload")
        with open(args.file, "rb") as stream:
            try:
                # storbinary returns only after the server's final reply (226); a 451 raises error_temp.
                # Over TLS it closes the data connection with a TLS close_notify, which the server requires.
                reply = ftp.storbinary(f"STOR {args.name}", stream)
            except ftplib.error_perm as exc:
                raise Permanent(f"upload refused: {exc}") from exc
        log(f"server: {reply}")
        try:
            remote_size = ftp.size(args.name)
        except ftplib.error_perm as exc:
            log(f"SIZE after upload refused ({exc}); the import has probably taken the file already")
            return
        if remote_size != local_size:
            raise OSError(f"size mismatch: server has {remote_size} bytes, local file has {local_size}")
        log(f"verified: {remote_size} bytes on the server")
        ftp.quit()
    finally:
        ftp.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    delay = args.delay
    for attempt in range(1, args.tries + 1):
        log(f"attempt {attempt} of {args.tries}: {args.file} -> ftp://{args.host}:{args.port}/upload/{args.name}")
        try:
            upload_once(args)
        except Permanent as exc:
            log(str(exc))
            return 1
        except ssl.SSLCertVerificationError as exc:
            log(f"certificate not trusted: {exc} (use --cafile, or --insecure for the demo); not retrying")
            return 1
        except (ftplib.Error, OSError, EOFError) as exc:
            if attempt == args.tries:
                log(f"giving up after {attempt} attempts: {exc}")
                return 1
            log(f"failed: {exc}; the server keeps nothing of a broken upload; retrying in {delay:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 300)
        else:
            log("done")
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
