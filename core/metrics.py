"""Process-wide counters and gauges, rendered in Prometheus' text format for ``/metrics``.

Every concern counts what it sees (``METRICS.inc("lcsync_logins_total", result="ok")``); the HTTP listener only
renders. Labels are few and bounded (results, environments, outcomes), never user names or addresses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

HELP = {
    "lcsync_connections_total": ("counter", "FTP control connections accepted"),
    "lcsync_logins_total": ("counter", "FTP logins by result (ok, refused) and reason"),
    "lcsync_bans_total": ("counter", "addresses banned after repeated failed logins"),
    "lcsync_bytes_received_total": ("counter", "bytes of completed uploads"),
    "lcsync_bytes_sent_total": ("counter", "bytes of completed downloads"),
    "lcsync_uploads_total": ("counter", "uploads by result (complete, incomplete)"),
    "lcsync_imports_total": ("counter", "import jobs finished, by environment and outcome"),
    "lcsync_deliveries_total": ("counter", "reports delivered into client folders"),
    "lcsync_queue_depth": ("gauge", "import jobs waiting, by environment"),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def gauge(self, name: str, collect: Callable[[], dict[Labels, float]]) -> None:
        """Register a gauge computed when /metrics is read (e.g. the queue depth, from the databases)."""
        with self._lock:
            self._gauges[name] = collect

    def render(self) -> str:
        with self._lock:
            values = {name: dict(series) for name, series in self._values.items()}
            gauges = dict(self._gauges)
        for name, collect in gauges.items():
            try:
                values[name] = collect()
            except Exception:  # a database that is down must not break /metrics
                values[name] = {}
        lines: list[str] = []
        for name in sorted(set(HELP) | set(values)):
            kind, text = HELP.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, number in sorted(values.get(name, {}).items()):
                rendered = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
                lines.append(f"{name}{{{rendered}}} {number:g}" if rendered else f"{name} {number:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


METRICS = Metrics()
