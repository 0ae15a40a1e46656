"""`python -m lcsync` works as `lcsync`."""

from __future__ import annotations

from lcsync.cli import main

main()
