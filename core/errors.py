"""The one exception tree of lcsync.

Every error that lcsync raises on purpose is an ``LcsyncError``. Errors are translated for a person in three places
only: the command line (a one-line message and an exit status), the import worker (a job's status and reason) and the
FTP handler (an FTP reply).

    LcsyncError
    ├── ConfigError              accounts.yaml (or an override) is invalid; the service refuses to start
    ├── UsageError               a command was called with arguments that cannot work
    ├── DatabaseUnavailable      the environment's database cannot be reached; the caller retries later
    ├── QueueError               a completed upload could not be taken into the spool
    └── InputFileError           an uploaded file cannot be read as what it claims to be (import, completions)
"""

from __future__ import annotations


class LcsyncError(Exception):
    """Base of every error lcsync raises on purpose."""


class ConfigError(LcsyncError):
    """The configuration is invalid.

    ``problems`` holds one line per mistake, each naming the file, the line and the key path, so that one run of
    ``lcsync check-config`` reports every mistake at once.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(LcsyncError):
    """A command was given arguments that cannot work (unknown client, unknown environment, ...)."""


class DatabaseUnavailable(LcsyncError):
    """The database of an environment could not be reached. Nothing was changed; try again later."""


class QueueError(LcsyncError):
    """A completed upload could not be taken into the spool. The file stays where it is."""


class InputFileError(LcsyncError):
    """A file cannot be read as the CSV it is meant to be. The message says what is wrong, for the client."""
