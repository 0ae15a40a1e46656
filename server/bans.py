"""Failed-login counting per address across connections, and the bans that follow."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from core.config import BanConfig


class BanList:
    """Counts failed logins per address; ``failures`` within ``within`` seconds bans it for ``for_`` seconds.

    Thread-safe: every connection thread reports into the same list.
    """

    def __init__(self, policy: BanConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def update_policy(self, policy: BanConfig) -> None:
        with self._lock:
            self.policy = policy

    def banned_for(self, address: str) -> float:
        """Seconds left on the ban of ``address``; 0 when it is not banned."""
        with self._lock:
            until = self._banned_until.get(address)
            if until is None:
                return 0.0
            left = until - self._clock()
            if left <= 0:
                del self._banned_until[address]
                return 0.0
            return left

    def record_failure(self, address: str) -> bool:
        """Count one failed login; True when this failure starts a ban."""
        now = self._clock()
        with self._lock:
            window = self._failures.setdefault(address, deque())
            window.append(now)
            while window and window[0] <= now - self.policy.within:
                window.popleft()
            if len(window) < self.policy.failures:
                self._prune(now)
                return False
            del self._failures[address]
            self._banned_until[address] = now + self.policy.for_
            return True

    def record_success(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _prune(self, now: float) -> None:
        # Bound memory under a flood from many addresses: forget windows that have gone quiet.
        if len(self._failures) > 10_000:
            stale = [ip for ip, window in self._failures.items() if window[-1] <= now - self.policy.within]
            for ip in stale:
                del self._failures[ip]
