"""The file system a logged-in client sees: its home, exactly upload/, reports/ and results/, and nothing beyond.

Uploads never write into upload/ directly: each STOR writes a fresh file under ``{data_dir}/incoming/`` (outside
every home) and the handler renames it into upload/ only once every byte has arrived. So a half-received file is
never visible, never watched, and a new upload of a name never alters a copy that is already queued.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path
from typing import IO, Any

from pyftpdlib.filesystems import AbstractedFS

from core.layout import HOME_FOLDERS


class SizeLimitedFile:
    """A binary file opened for an upload; refuses to grow past ``limit`` bytes (pyftpdlib then aborts with 426)."""

    def __init__(self, handle: IO[bytes], final_path: str, limit: int) -> None:
        self._handle = handle
        self.name = handle.name  # pyftpdlib hands this to on_file_received
        self.final_path = final_path
        self.limit = limit
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise OSError(errno.EFBIG, f"File exceeds the {self.limit}-byte upload limit")
        return self._handle.write(data)

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()

    def fileno(self) -> int:
        return self._handle.fileno()


class HomeFS(AbstractedFS):
    """pyftpdlib's virtual file system, confined to one account's home with no symbolic links followed."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__(os.path.realpath(root), cmd_channel)

    # --- confinement ---------------------------------------------------------------------------------------------

    def validpath(self, path: str) -> bool:
        """Inside the home, and reached without any symbolic link (even one that points inside)."""
        root = self.root
        absolute = os.path.abspath(path)
        if os.path.realpath(absolute) != absolute:
            return False
        return absolute == root or absolute.startswith(root + os.sep)

    def listdir(self, path: str) -> list[str]:
        names = super().listdir(path)
        if os.path.realpath(path) == self.root:
            return [name for name in names if name in HOME_FOLDERS]
        shown = []
        for name in names:
            try:
                mode = os.lstat(os.path.join(path, name)).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                shown.append(name)
        return shown

    def listdirinfo(self, path: str) -> list[str]:
        return self.listdir(path)

    # --- uploads -------------------------------------------------------------------------------------------------

    def open(self, filename: str, mode: str) -> Any:
        if "r" in mode and "+" not in mode:
            return super().open(filename, mode)
        handler = self.cmd_channel
        account = handler.account
        incoming: Path = handler.layout.incoming_dir(account.env, account.client_id)
        incoming.mkdir(parents=True, exist_ok=True)
        temporary = incoming / f"{uuid.uuid4().hex}.upload"
        handle = open(temporary, "xb")  # noqa: SIM115 - closed by pyftpdlib's data channel
        handler.incoming[str(temporary)] = filename
        return SizeLimitedFile(handle, filename, handler.max_upload_size)
