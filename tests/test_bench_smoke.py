"""The SSE-vs-WebSocket benchmark runs end to end at a tiny size (no timing assertions)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transport_benchmark_produces_its_results(tmp_path):
    plot = tmp_path / "transports.png"
    result = subprocess.run(
        [sys.executable, "-m", "bench.transports", "--smoke", "--out", str(tmp_path), "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "transports.json").read_text())
    assert "Bytes on the wire per token" in result.stdout
    assert {"sse", "sse+gzip", "ws"} <= set(results["bytes"])
    assert all(row["exact_text"] and row["complete"] == row["streams"] for row in results["bytes"].values()
               if "complete" in row)
    load = {(row["streams"], row["transport"]): row for row in results["load"]}
    assert {(3, "sse"), (3, "ws"), (3, "no client")} <= set(load)
    assert load[(3, "sse")]["complete"] == load[(3, "ws")]["complete"] == 3
    assert all(row["exact_text"] and row["no_duplicates"] and row["terminal"] == "done"
               for row in results["switch"].values())
    assert set(results["resume"]) == set(results["ttft"]) == set(results["idle"]) == {"sse", "ws"}
    if shutil.which("nginx"):
        assert results["nginx"]["sse"]["complete"] == results["nginx"]["ws"]["complete"] == 3
        assert results["http2"]["sse over h2"]["complete"] == results["http2"]["sse over h2"]["streams"]
    assert plot.stat().st_size > 10_000
