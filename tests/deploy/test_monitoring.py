"""The monitoring files deploy/ ships: Prometheus accepts the scrape config, and the dashboard is
a dashboard (its queries are checked against live nodes in tests/integration/test_metrics.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("LIFERAFT_REQUIRE_PROMTOOL"),
    reason="promtool is not installed: `apt-get install prometheus` (Debian); CI installs it",
)
def test_promtool_accepts_the_scrape_config() -> None:
    out = subprocess.run(
        ["promtool", "check", "config", str(REPO / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_has_panels_that_query_liferaft() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/liferaft-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dashboard["panels"]:
        assert p["targets"], p["title"]
        assert all("liferaft_" in t["expr"] or "up{" in t["expr"] for t in p["targets"]), p["title"]
