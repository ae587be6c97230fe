"""`@durable-streams/client` on Node follows a running generation through a proxy that cuts its connection.

The client reconnects from the last offset it was given; the text it rebuilds
must be exactly the stored answer, every message once.
"""

import asyncio
import json
import os
import shutil

import pytest

from tests.conftest import require_service
from tests.durable.ds_support import generation_url, rebuild
from tests.durable.test_ds_conformance import SUITE_DIR
from tests.support.api import api_client
from tests.support.proxy import FaultProxy

SCRIPT = SUITE_DIR / "read_generation.mjs"


@pytest.fixture
def slow_server(start_server):
    return start_server("sqlite", CHAT_SIMULATED_TOKENS_PER_S=25, DURABLE_LONG_POLL_TIMEOUT_S=2)


@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_node_client_resumes_after_cut(slow_server, live):
    require_service(shutil.which("node") is not None, "node is not installed")
    require_service((SUITE_DIR / "node_modules" / "@durable-streams" / "client").exists(),
                    "@durable-streams/client is not installed (make conformance-deps)")
    async with api_client(slow_server.url, "alice") as alice:
        generation = (await alice.ask("hello"))["generation"]
        with FaultProxy(slow_server.port) as proxy:
            node = await asyncio.create_subprocess_exec(
                "node", str(SCRIPT), cwd=SUITE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "DS_URL": generation_url(proxy.url, generation["id"]), "DS_TOKEN": alice.token,
                     "DS_LIVE": live},
            )
            messages, cut = [], False
            try:
                async with asyncio.timeout(60):
                    while line := await node.stdout.readline():
                        messages += json.loads(line)["items"]
                        if not cut and any(m["type"] == "token" for m in messages):
                            cut = await asyncio.to_thread(proxy.cut) > 0
                    await node.wait()
            finally:
                if node.returncode is None:
                    node.kill()
                    await node.wait()
            stderr = (await node.stderr.read()).decode()
        stored = await alice.wait_terminal(generation["id"])
    assert cut, "the proxy cut no live connection"
    assert node.returncode == 0, stderr
    ids = [m["id"] for m in messages if m["type"] == "token"]
    assert ids == sorted(set(ids)), "every token once, in order"
    assert rebuild(messages) == (stored["text"], messages[-1])
    assert messages[-1]["status"] == "complete"
