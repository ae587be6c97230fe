"""The Durable Streams conformance suite (npm, pinned in tests/conformance) against our server, auth on.

The suite sends no credentials, so it runs through a loopback proxy that adds
alice's bearer token. Every non-fork group must pass; fork support is optional
and not offered. `make conformance` runs the same thing and prints the figures.
"""

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service
from tests.durable.bearer_proxy import BearerProxy
from tests.support.server import USERS

SUITE_DIR = Path(__file__).resolve().parents[1] / "conformance"
VITEST = SUITE_DIR / "node_modules" / ".bin" / "vitest"
LONG_POLL_TIMEOUT_S = 5  # Within the protocol's advice and the suite's 21 s per test; keeps the run short.
OPTIONAL_GROUP_PREFIX = "Fork - "


def issue_token(base_url: str) -> str:
    response = httpx.post(f"{base_url}/api/auth/token", json={"username": "alice", "password": USERS["alice"]}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def group_counts(report: dict) -> dict[str, Counter]:
    """Passed / failed / skipped per top-level describe() group of the vitest JSON report."""
    groups: dict[str, Counter] = {}
    for file in report["testResults"]:
        for test in file["assertionResults"]:
            group = (test["ancestorTitles"] or ["(top level)"])[0]
            groups.setdefault(group, Counter())[test["status"]] += 1
    return groups


def failures(report: dict) -> list[str]:
    return [
        " > ".join([*test["ancestorTitles"], test["title"]])
        for file in report["testResults"]
        for test in file["assertionResults"]
        if test["status"] == "failed"
    ]


@pytest.mark.timeout(1800)
def test_conformance_suite(start_server, tmp_path):
    require_service(shutil.which("node") is not None, "node is not installed")
    require_service(VITEST.exists(), "the conformance suite is not installed (make conformance-deps)")
    # The suite makes its hundreds of streams as one user: no per-user stream quota here.
    server = start_server(
        "sqlite", fresh=True, DURABLE_LONG_POLL_TIMEOUT_S=LONG_POLL_TIMEOUT_S, DURABLE_MAX_STREAMS_PER_USER=0
    )
    token = issue_token(server.url)
    report_path = tmp_path / "conformance.json"
    with BearerProxy(server.port, token) as proxy:
        result = subprocess.run(
            [str(VITEST), "run", "--config", "vitest.config.js", "--reporter=default", "--reporter=json",
             f"--outputFile.json={report_path}"],
            cwd=SUITE_DIR,
            env={**os.environ, "DS_BASE_URL": f"{proxy.url}/ds", "DS_LONG_POLL_TIMEOUT_MS": str(LONG_POLL_TIMEOUT_S * 1000),
                 "NO_COLOR": "1", "CI": "1"},
            capture_output=True,
            text=True,
            timeout=1700,
            check=False,  # The report, not the exit status, says what failed.
        )
    assert report_path.exists(), f"vitest wrote no report:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    groups = group_counts(report)
    lines = [
        f"{name}: {c['passed']}/{sum(c.values())} passed" + (f" ({c['skipped']} skipped)" if c["skipped"] else "")
        for name, c in groups.items()
    ]
    total = sum(c["passed"] for c in groups.values()), sum(sum(c.values()) for c in groups.values())
    print(f"conformance: {total[0]}/{total[1]} passed\n" + "\n".join(lines))
    required = [name for name in failures(report) if not name.startswith(OPTIONAL_GROUP_PREFIX)]
    assert not required, "non-fork conformance tests failed:\n" + "\n".join(required)
