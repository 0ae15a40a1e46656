"""The optional HTTP listener: /healthz and Prometheus /metrics, fed by what the service really did."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from serving import connect, running, upload, user_data, wait_for

from core.config import load_config


def _get(address: tuple[str, int], path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}{re.escape('{' + rendered + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_healthz_and_metrics_follow_what_happens(write_config: Any) -> None:
    with running(load_config(write_config(http="127.0.0.1:0"))) as server:
        health = server.service.health
        assert health is not None
        status, body = _get(health.address, "/healthz")
        assert status == 200
        assert json.loads(body) == {
            "status": "ok",
            "checks": {"ftp": "ok", "database:sandbox": "ok", "database:production": "ok"},
        }
        _, before = _get(health.address, "/metrics")
        ftp = connect(server)
        upload(ftp, "upload/acme_users.csv", user_data(10))
        ftp.quit()
        wait_for(lambda: server.jobs("sandbox"), what="the upload's job")
        _, after = _get(health.address, "/metrics")
        assert _metric(after, "lcsync_logins_total", env="sandbox", result="ok") == (
            _metric(before, "lcsync_logins_total", env="sandbox", result="ok") + 1
        )
        assert _metric(after, "lcsync_uploads_total", result="complete") == (
            _metric(before, "lcsync_uploads_total", result="complete") + 1
        )
        assert _metric(after, "lcsync_queue_depth", env="sandbox") == 1  # imports are off in this service
        assert "# TYPE lcsync_bans_total counter" in after
        assert _get(health.address, "/nope")[0] == 404


def test_healthz_fails_when_a_database_is_unreachable(write_config: Any, tmp_path: Any) -> None:
    def broken(data: dict[str, Any]) -> None:
        data["environments"]["production"]["database"] = "postgresql+psycopg://nobody@127.0.0.1:9/none"

    with running(load_config(write_config(broken, http="127.0.0.1:0"))) as server:
        assert server.service.health is not None
        status, body = _get(server.service.health.address, "/healthz")
        assert status == 503
        checks = json.loads(body)["checks"]
        assert checks["database:sandbox"] == "ok"
        assert checks["database:production"].startswith("unavailable")


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_no_listener_when_http_is_null(write_config: Any, path: str) -> None:
    with running(load_config(write_config())) as server:
        assert server.service.health is None
