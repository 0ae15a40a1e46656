"""The servers under test: lcsync, vsftpd (Debian package) and bare pyftpdlib, each started on 127.0.0.1.

Each server runs in a process group of its own, writes its log to a file in the run's temporary folder, and is
stopped by ``Server.stop`` (SIGTERM to the group, then SIGKILL).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs

REPO = Path(__file__).resolve().parent.parent
VSFTPD_USER = "lcsbench"
VSFTPD_INSTALL_HINT = "vsftpd is not installed: run `apt-get update && apt-get install -y vsftpd` (as root) and retry"


@dataclass
class Shared:
    """What every server of one run shares: the temporary folder, the TLS pair and the file to download."""

    workdir: Path
    cert: Path
    key: Path
    source: Path  # the file uploaded by every upload and hard-linked as every server's download file
    size: int


@dataclass
class Server:
    """One running FTP server as the clients see it."""

    name: str
    port: int
    user: str
    password: str
    upload_path: str  # FTP path the upload benchmark stores to
    download_path: str  # FTP path of the hard link to ``Shared.source``
    upload_local: Path  # where a finished upload lands on disk
    proc: subprocess.Popen[bytes]
    log: Path
    group: procs.CpuGroup
    cleanup_dirs: list[Path] = field(default_factory=list)  # emptied after each upload (lcsync's queue, archive...)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds used so far by the server and every process it started."""
        counted = self.group.cpu()
        return procs.tree_cpu(self.pid) if counted is None else counted

    def alive(self) -> bool:
        return self.proc.poll() is None

    def clean_uploads(self) -> None:
        """Remove what an upload left behind, so every upload starts from the same state."""
        self.upload_local.unlink(missing_ok=True)
        for folder in self.cleanup_dirs:
            if not folder.is_dir():
                continue
            for entry in folder.rglob("*"):
                if entry.is_file() or entry.is_symlink():
                    entry.unlink(missing_ok=True)

    def settle_upload(self, timeout: float = 10.0) -> None:
        """Give the server time to finish what a completed upload starts before the next measurement.

        lcsync queues a matching upload and its on_arrival import takes it out of upload/ (the bench's file is
        random bytes, so the import rejects it). Wait, with a deadline, for the file to leave upload/.
        """
        if not self.cleanup_dirs:
            return
        deadline = time.monotonic() + timeout
        while self.upload_local.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        procs.stop_group(self.proc)
        self.group.remove()


def _spawn(
    argv: list[str], log: Path, group: procs.CpuGroup, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,  # its own process group, so stop_group reaches every child
            preexec_fn=group.join,  # in its CPU cgroup before it runs a single instruction of its own
        )


def _started(server: Server) -> Server:
    try:
        procs.wait_port("127.0.0.1", server.port, server.proc)
    except Exception:
        server.stop()
        tail = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
        raise RuntimeError(f"{server.name} did not start; last log lines:\n{tail}") from None
    return server


def _link_download(shared: Shared, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    os.link(shared.source, target)


# -- bare pyftpdlib -------------------------------------------------------------------------------------------------


def start_pyftpdlib(shared: Shared, *, threaded: bool = False) -> Server:
    name = "pyftpdlib-threaded" if threaded else "pyftpdlib"
    root = shared.workdir / f"{name}_root"
    root.mkdir(exist_ok=True)
    _link_download(shared, root / "download.bin")
    password = secrets.token_urlsafe(12)
    port = procs.free_port()
    passive = "60000-60999" if threaded else "61000-61999"
    argv = [sys.executable, "-m", "bench.bare_server", "--port", str(port), "--root", str(root)]
    argv += ["--user", "bench", "--password", password, "--cert", str(shared.cert), "--key", str(shared.key)]
    argv += ["--passive", passive] + (["--threaded"] if threaded else [])
    log = shared.workdir / f"{name}.log"
    group = procs.CpuGroup(name)
    server = Server(name, port, "bench", password, "upload.bin", "download.bin", root / "upload.bin",
                    _spawn(argv, log, group), log, group)  # fmt: skip
    return _started(server)


# -- vsftpd ---------------------------------------------------------------------------------------------------------


def vsftpd_binary() -> str | None:
    return shutil.which("vsftpd") or next((p for p in ("/usr/sbin/vsftpd",) if os.access(p, os.X_OK)), None)


def vsftpd_version(binary: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "vsftpd"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _ensure_vsftpd_user(password: str) -> None:
    """A local system user for vsftpd's PAM login; its shell must be listed in /etc/shells (pam_shells).

    The password is stored as sha512crypt, as for BENCH-NOTES' reference figure (Debian 12's default, yescrypt,
    costs vsftpd several times more CPU per login, which would flatter lcsync).
    """
    try:
        pwd.getpwnam(VSFTPD_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--create-home", "--shell", "/bin/rbash", VSFTPD_USER], check=True
        )  # fmt: skip
    subprocess.run(["chpasswd", "--crypt-method", "SHA512"], input=f"{VSFTPD_USER}:{password}\n", text=True, check=True)


def start_vsftpd(shared: Shared) -> Server:
    binary = vsftpd_binary()
    if binary is None:
        raise RuntimeError(VSFTPD_INSTALL_HINT)
    if os.geteuid() != 0:
        raise RuntimeError("vsftpd needs root (PAM logins of a local user); run the bench as root")
    password = secrets.token_urlsafe(12)
    _ensure_vsftpd_user(password)
    user = pwd.getpwnam(VSFTPD_USER)
    root = shared.workdir / "vsftpd_root"
    root.mkdir(exist_ok=True)
    os.chown(root, user.pw_uid, user.pw_gid)
    _link_download(shared, root / "download.bin")
    empty = shared.workdir / "vsftpd_empty"  # secure_chroot_dir: empty, owned by root, not writable
    empty.mkdir(mode=0o555, exist_ok=True)
    port = procs.free_port()
    log = shared.workdir / "vsftpd.log"
    conf = shared.workdir / "vsftpd.conf"
    conf.write_text(
        "\n".join(
            [
                "listen=YES",
                "listen_ipv6=NO",
                "background=NO",
                "listen_address=127.0.0.1",
                f"listen_port={port}",
                "anonymous_enable=NO",
                "local_enable=YES",
                "write_enable=YES",
                "local_umask=022",
                f"local_root={root}",
                "pasv_enable=YES",
                "pasv_min_port=63000",
                "pasv_max_port=63999",
                "pasv_address=127.0.0.1",
                "seccomp_sandbox=NO",  # with it on, logins work but every transfer fails on these machines
                "max_clients=0",  # set explicitly, or it answers 421 under load
                "max_per_ip=0",
                f"secure_chroot_dir={empty}",
                "pam_service_name=vsftpd",
                "xferlog_enable=YES",
                f"vsftpd_log_file={log}",
                "syslog_enable=NO",
                "ssl_enable=YES",
                f"rsa_cert_file={shared.cert}",
                f"rsa_private_key_file={shared.key}",
                # One instance serves both plain FTP and explicit FTPS; the TLS runs ask for TLS themselves.
                "force_local_logins_ssl=NO",
                "force_local_data_ssl=NO",
                "allow_anon_ssl=NO",
                "require_ssl_reuse=NO",
                "ssl_ciphers=HIGH",
                "",
            ]
        )
    )
    os.chmod(shared.workdir, 0o755)  # the vsftpd user must reach local_root
    group = procs.CpuGroup("vsftpd")
    server = Server("vsftpd", port, VSFTPD_USER, password, "upload.bin", "download.bin", root / "upload.bin",
                    _spawn([binary, str(conf)], shared.workdir / "vsftpd.out", group), log, group)  # fmt: skip
    return _started(server)


# -- lcsync ---------------------------------------------------------------------------------------------------------

LCSYNC_UPLOAD_NAME = "bench_1g.csv"


def start_lcsync(shared: Shared) -> Server:
    """``python -m lcsync serve`` with a bench accounts.yaml: one sandbox account allowed from 127.0.0.1 only."""
    sys.path.insert(0, str(REPO))
    from core.passwords import hash_password

    password = secrets.token_urlsafe(12)
    data = shared.workdir / "lcsync_data"
    home = data / "sandbox" / "bench"
    for folder in ("upload", "reports", "results"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    _link_download(shared, home / "reports" / LCSYNC_UPLOAD_NAME)
    port = procs.free_port()
    config = shared.workdir / "accounts.yaml"
    max_upload = max(2 << 30, 2 * shared.size)
    config.write_text(
        f"""data_dir: {data}
server:
  listen: ["127.0.0.1:{port}"]
  passive_ports: "62000-62999"
  tls: {{cert: {shared.cert}, key: {shared.key}}}
  max_connections: 1024
  max_connections_per_ip: 1024
  max_upload_size: {max_upload}
  ban: {{failures: 1000000, within: 1s, for: 1s}}
  http: null
environments:
  sandbox: {{database: "sqlite:///{{data_dir}}/sandbox.db", require_tls: false, import_schedule: on_arrival}}
clients:
  bench:
    allowed_ips: ["127.0.0.1"]
    accounts:
      sandbox: {{username: bench, password_hash: "{hash_password(password)}"}}
    import:
      file_pattern: "bench*.csv"
      template: {{key: employee_id, columns: {{"Employee ID": employee_id}}, required: [employee_id]}}
"""
    )
    log = shared.workdir / "lcsync.log"
    env = dict(os.environ)
    env.pop("LCSYNC_CONFIG", None)
    env.pop("LCSYNC_DATA_DIR", None)
    argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "lcsync", "serve", "--config", str(config)]
    if not Path(argv[0]).exists():
        argv[0] = sys.executable
    cleanup = [home / "upload", home / "results"]
    cleanup += [data / sub / "sandbox" / "bench" for sub in ("incoming", "spool", "archive")]
    group = procs.CpuGroup("lcsync")
    server = Server("lcsync", port, "bench", password, f"upload/{LCSYNC_UPLOAD_NAME}",
                    f"reports/{LCSYNC_UPLOAD_NAME}", home / "upload" / LCSYNC_UPLOAD_NAME,
                    _spawn(argv, log, group, env), log, group, cleanup)  # fmt: skip
    return _started(server)


def start_pyftpdlib_threaded(shared: Shared) -> Server:
    """ThreadedFTPServer, the server class lcsync builds on: an optional extra reference."""
    return start_pyftpdlib(shared, threaded=True)


STARTERS = {
    "lcsync": start_lcsync,
    "vsftpd": start_vsftpd,
    "pyftpdlib": start_pyftpdlib,
    "pyftpdlib-threaded": start_pyftpdlib_threaded,
}
