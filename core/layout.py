"""Where everything lives under ``data_dir`` (SPEC section 3).

    {data_dir}/{env}/{client}/upload/     the client's FTP home holds exactly these three folders
    {data_dir}/{env}/{client}/reports/
    {data_dir}/{env}/{client}/results/
    {data_dir}/incoming/{env}/{client}/   FTP uploads in flight; moved into upload/ only when complete
    {data_dir}/spool/{env}/{client}/      queued upload content, one file per import job
    {data_dir}/archive/{env}/{client}/    processed uploads, kept archive_days
    {data_dir}/outbox/{env}/{client}/     generated reports waiting for delivery
    {data_dir}/tls/                       the generated self-signed certificate

Internal folders are outside every home, so no FTP path can reach them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_FOLDERS = ("upload", "reports", "results")


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    def home(self, env: str, client: str) -> Path:
        return self.data_dir / env / client

    def upload_dir(self, env: str, client: str) -> Path:
        return self.home(env, client) / "upload"

    def reports_dir(self, env: str, client: str) -> Path:
        return self.home(env, client) / "reports"

    def results_dir(self, env: str, client: str) -> Path:
        return self.home(env, client) / "results"

    def incoming_dir(self, env: str, client: str) -> Path:
        return self.data_dir / "incoming" / env / client

    def spool_dir(self, env: str, client: str) -> Path:
        return self.data_dir / "spool" / env / client

    def archive_dir(self, env: str, client: str) -> Path:
        return self.data_dir / "archive" / env / client

    def outbox_dir(self, env: str, client: str) -> Path:
        return self.data_dir / "outbox" / env / client

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def ensure(self, env: str, client: str) -> None:
        """Create an account's home and internal folders (idempotent)."""
        for folder in HOME_FOLDERS:
            (self.home(env, client) / folder).mkdir(parents=True, exist_ok=True)
        for internal in (self.incoming_dir, self.spool_dir, self.archive_dir, self.outbox_dir):
            internal(env, client).mkdir(parents=True, exist_ok=True)

    def relative(self, path: Path) -> str:
        """``path`` relative to data_dir, as stored in the database (a shared data_dir may be mounted elsewhere)."""
        return os.path.relpath(path, self.data_dir)

    def absolute(self, relative: str) -> Path:
        return self.data_dir / relative
