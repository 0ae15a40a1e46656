"""Benchmarks for lcsync's FTP/FTPS front door, run as ``python -m bench`` (see docs/performance.md).

Every server the bench starts (lcsync, vsftpd, bare pyftpdlib) listens on 127.0.0.1 only, runs in a process group of
its own and is stopped by the bench; every client loop is bounded in count and time.
"""
