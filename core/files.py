"""Putting a finished file in place for a client: atomically, durably, and never over an existing file."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path

# Where hard links are refused (some shared and FUSE file systems), a check-then-rename stands in for the link.
_NO_HARD_LINKS = (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS)


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(temp: Path, candidates: Iterable[Path], taken: Callable[[Path], bool] | None = None) -> Path:
    """Give the finished file ``temp`` the first of ``candidates`` that is free (and not ``taken``), never replacing a
    file: a hard link claims the name atomically, then ``temp`` is removed. Returns the final path."""
    for final in candidates:
        if taken is not None and taken(final):
            continue
        try:
            os.link(temp, final)  # fails when the name exists: never overwrites
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if final.exists():  # a race only between two writers of the same name in the same second
                continue
            os.replace(temp, final)
        else:
            temp.unlink()
        fsync_dir(final.parent)
        return final
    raise FileExistsError(f"no free name for {temp.name}")
