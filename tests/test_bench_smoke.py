"""The benchmarks run end to end at a tiny size (no timing assertions; every stream's text is checked)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import postgres_available, redis_available

ROOT = Path(__file__).resolve().parents[1]
# At the benchmark's default priority (nice -20, their own sessions) its servers can starve the tests
# running beside them: the likely cause of a browser test's 1.2 s stall timer firing on CI.
POLITE = ("--nice", "0")


@pytest.mark.timeout(300)  # Its run may take 240 s on a busy machine; pytest's default is 120.
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


@pytest.mark.timeout(300)
def test_capacity_benchmark_runs_every_server_and_checks_every_text(tmp_path):
    plot = tmp_path / "capacity.png"
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--smoke", *POLITE, "--out", str(tmp_path), "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "capacity.json").read_text())
    servers = {"bare-sse", "bare-django", "project-uvicorn", "project-uvicorn-c48", "project-uvicorn-asyncio",
               "project-uvicorn-asyncio-c48", "project-daphne", "project-daphne-c48"}
    assert {row["server"] for row in results["ladder"]} == servers
    for row in results["ladder"]:
        # Every stream ended with exactly the stored text; the figures exist (their values are not judged here).
        counts = {key: row.get(key) for key in ("server", "streams", "exact", "unfinished", "errors", "mismatches", "problems",
                                                "why_not")}
        assert row.get("exact") == row["streams"] == 2, counts
        assert row["mismatches"] == row["errors"] == row["unfinished"] == 0, counts
        assert row["delivered"] is not None and row["cpu_s"] is not None and row["threads_max"] >= 1
    project = [row for row in results["ladder"] if row["server"].startswith("project")]
    assert all(row["at_rest"]["ttft_ms"] and row["at_rest"]["resume_ms"] for row in project)
    assert all(row["db_connections_max"] is not None for row in project)
    assert {row["server"] for row in results["idle"]} >= {"bare-sse", "project-uvicorn", "project-daphne"}
    assert all(row["open"] == row["streams"] == 3 for row in results["idle"])
    if postgres_available() and redis_available():
        assert {row["server"] for row in results["scale_out"]} == {"pg-redis-1-process", "pg-redis-2-processes"}
        assert all(row["exact"] == row["streams"] for row in results["scale_out"])
    assert results["mismatches"] == 0
    assert "x bare-sse" in result.stdout
    assert plot.stat().st_size > 10_000


@pytest.mark.timeout(180)
def test_capacity_benchmark_one_request_flow_checks_every_text(tmp_path):
    """`--one-request`: each answer is one POST whose 201 is its stream; the text is checked all the same."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--smoke", *POLITE, "--one-request", "--servers", "project-uvicorn",
         "--phases", "ladder", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "start with one POST that streams" in result.stdout
    results = json.loads((tmp_path / "capacity.json").read_text())
    project = next(row for row in results["ladder"] if row["server"] == "project-uvicorn")
    assert project["exact"] == project["streams"] == 2 and project["mismatches"] == project["errors"] == 0
    assert project["at_rest"]["ttft_ms"] and all(ms is not None for ms in project["at_rest"]["ttft_ms"])


@pytest.mark.timeout(180)
def test_capacity_benchmark_with_a_reasoning_model_checks_both_parts(tmp_path):
    """`--model simulated-reasoning`: each project server also answers with reasoning, both parts checked."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--smoke", *POLITE, "--servers", "project-uvicorn", "--phases",
         "ladder", "--model", "simulated-reasoning", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row["server"]: row for row in json.loads((tmp_path / "capacity.json").read_text())["ladder"]}
    text, reasoning = rows["project-uvicorn"], rows["project-uvicorn+simulated-reasoning"]
    for row in (text, reasoning):
        assert row["exact"] == row["streams"] == 2 and row["mismatches"] == row["errors"] == 0, row.get("problems")
    assert (text["with_reasoning"], reasoning["with_reasoning"]) == (0, 2)
    assert (reasoning["model"], reasoning["text_only"]) == ("simulated-reasoning", "project-uvicorn")
    # Answers start with reasoning: the probes wait for the first token of either part.
    assert reasoning["at_rest"]["ttft_ms"] and all(ms is not None for ms in reasoning["at_rest"]["ttft_ms"])


@pytest.mark.timeout(240)
def test_answer_cost_benchmark_runs_every_flow(tmp_path):
    from bench.answer_cost import FLOWS

    result = subprocess.run(
        [sys.executable, "-m", "bench.answer_cost", "--answers", "2", "--rounds", "1", "--out", str(tmp_path),
         "--flows", ",".join(FLOWS)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "answer_cost.json").read_text())
    assert [(row["flow"], len(row["ms"])) for row in rows] == [(flow, 1) for flow in FLOWS]
    # CPU time is counted in 10 ms ticks: two 404s may show none, two answers not.
    assert all(row["ms"][0] >= 0 for row in rows)
    assert all(row["ms"][0] > 0 for row in rows if row["flow"] in ("one request", "two requests"))
