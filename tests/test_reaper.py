"""The orphan reaper: unit checks on the database, several reapers at once, and a server killed with SIGKILL."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from chat.models import Generation
from chat.streaming.reaper import reap_orphans
from tests.support import factories
from tests.support.client import ChatClient, logged_in
from tests.support.server import ROOT, TEST_ENV, LiveServer, manage
from tests.support.wait import eventually

PROMPT = "Explain how a server should recover streams after a crash"


# --- On the database ------------------------------------------------------------------


@pytest.mark.django_db
def test_reaper_ends_stale_generations_keeping_their_persisted_tokens(settings):
    settings.CHAT_HEARTBEAT_STALE_S = 30
    stale = factories.generation(status="streaming", heartbeat_age_s=45, age_s=60)
    never_beat = factories.generation(status="queued", tokens=[], age_s=45)
    alive = factories.generation(status="streaming", heartbeat_age_s=1, age_s=60)
    young = factories.generation(status="queued", tokens=[], age_s=5)
    finished = factories.generation(status="complete", age_s=600)
    # The heartbeat counts tokens produced; the chunks on disk may trail it.
    Generation.objects.filter(pk=stale.pk).update(last_seq=14, token_count=14)

    reaped = reap_orphans()

    assert {g.pk for g in reaped} == {stale.pk, never_beat.pk}
    stale.refresh_from_db()
    assert (stale.status, stale.interrupt_reason) == ("interrupted", "worker_lost")
    assert (stale.last_seq, stale.token_count) == (11, 11), "what the chunks hold, not what the heartbeat said"
    assert "no heartbeat from worker host:1234:abcdef" in stale.error
    assert stale.assistant_message.content == "Resume by event id, then replay from the database."
    never_beat.refresh_from_db()
    assert (never_beat.status, never_beat.last_seq, never_beat.assistant_message.content) == ("interrupted", 0, "")
    assert "nobody took it within 30 s" in never_beat.error
    for untouched, status in ((alive, "streaming"), (young, "queued"), (finished, "complete")):
        untouched.refresh_from_db()
        assert untouched.status == status
    assert reap_orphans() == [], "a second pass finds nothing to do"


@pytest.mark.django_db
def test_reaper_skips_the_generations_this_process_runs(settings):
    settings.CHAT_HEARTBEAT_STALE_S = 30
    mine = factories.generation(status="streaming", heartbeat_age_s=45)
    other = factories.generation(status="streaming", heartbeat_age_s=45)
    assert [g.pk for g in reap_orphans(exclude=[mine.pk])] == [other.pk]
    assert Generation.objects.get(pk=mine.pk).status == "streaming"


@pytest.mark.django_db
def test_reaper_keeps_a_continuation_prefix(settings):
    settings.CHAT_HEARTBEAT_STALE_S = 30
    first = factories.generation(status="interrupted", reason="upstream_stall", tokens=["Half", " an"])
    continuation = factories.generation(
        status="streaming", continued_from=first, tokens=[" answer", ", then", " more"], heartbeat_age_s=60
    )
    reap_orphans()
    continuation.refresh_from_db()
    assert continuation.assistant_message.content == "Half an answer, then more"
    assert (continuation.first_seq, continuation.last_seq, continuation.token_count) == (3, 5, 3)


@pytest.mark.django_db
def test_reap_generations_command(settings):
    settings.CHAT_HEARTBEAT_STALE_S = 30
    stale = factories.generation(status="streaming", heartbeat_age_s=45)
    dry = StringIO()
    call_command("reap_generations", "--dry-run", stdout=dry)
    assert str(stale.pk) in dry.getvalue() and "1 orphaned generation(s)" in dry.getvalue()
    assert Generation.objects.get(pk=stale.pk).status == "streaming"
    out = StringIO()
    call_command("reap_generations", stdout=out)
    assert f"{stale.pk} interrupted (worker_lost) at seq 11" in out.getvalue()
    assert "Reaped 1 orphaned generation(s)" in out.getvalue()
    assert Generation.objects.get(pk=stale.pk).status == "interrupted"


# --- Several processes at once --------------------------------------------------------

CREATE_ORPHANS = """
from tests.support import factories
for n in range({count}):
    factories.generation(status="streaming", heartbeat_age_s=120, age_s=130, prompt=f"orphan {{n}}")
"""


def test_concurrent_reapers_end_each_orphan_exactly_once(database_templates, backend):
    """Three reaper processes race over the same orphans: every one is ended once, by one of them."""
    from tests.conftest import require_backend

    require_backend(backend)
    url = database_templates.fresh(backend)
    env = {**TEST_ENV, "DATABASE_URL": url}
    manage("shell", "-c", CREATE_ORPHANS.format(count=30), env=env)
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "reap_generations"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    reaped = [line.split()[0] for out, _err in outputs for line in out.splitlines() if "(worker_lost)" in line]
    assert len(reaped) == 30 and len(set(reaped)) == 30, "each orphan ended by exactly one process"
    check = manage(
        "shell",
        "-c",
        "from chat.models import Generation as G; import json; "
        "print(json.dumps(sorted(set(G.objects.values_list('status', 'interrupt_reason')))))",
        env=env,
    )
    assert json.loads(check.strip().splitlines()[-1]) == [["interrupted", "worker_lost"]]


# --- A real server, killed ------------------------------------------------------------


async def persisted_through(client: ChatClient, generation_id: str, seq: int) -> None:
    """Wait until the generation's stored tokens reach `seq` (the API's last_seq counts stored chunks)."""
    await eventually(
        lambda: client.generation(generation_id),
        until=lambda generation: generation["last_seq"] >= seq,
        what=f"token {seq} of {generation_id} to be stored",
    )


def persisted_chunks(database_url: str, generation_id: str) -> list:
    """Read the chunks straight from the database, with no server in between."""
    out = manage(
        "shell",
        "-c",
        "import json; from chat.models import TokenChunk; "
        f"print(json.dumps(list(TokenChunk.objects.filter(generation_id='{generation_id}')"
        ".order_by('first_seq').values_list('first_seq', 'last_seq', 'tokens'))))",
        env={**TEST_ENV, "DATABASE_URL": database_url},
    )
    return json.loads(out.strip().splitlines()[-1])


# Slow tokens, so the kill lands mid-answer; a short staleness, so the test is quick.
KILL_ENV = {
    "CHAT_SIMULATED_TOKENS_PER_S": "20",
    "CHAT_SIMULATED_POINTS": "8",
    "CHAT_HEARTBEAT_STALE_S": "2",
    "CHAT_REAPER_INTERVAL_S": "0.5",
}


async def test_sigkilled_server_leaves_an_orphan_that_the_next_server_reaps(start_server, backend, tmp_path):
    server = start_server(backend, fresh=True, **KILL_ENV)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        early = await client.read_stream(generation["id"], max_events=3)
        await persisted_through(client, generation["id"], 10)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    chunks = persisted_chunks(server.database_url, generation["id"])
    persisted_text = "".join("".join(tokens) for _first, _last, tokens in chunks)
    persisted_last = chunks[-1][1]
    assert persisted_last >= 10 and [c[0] for c in chunks] == [1] + [c[1] + 1 for c in chunks[:-1]]

    restarted = LiveServer(database_url=server.database_url, env=KILL_ENV, workdir=tmp_path).start()
    try:
        async with await logged_in(restarted) as client:
            # Nothing is started on the new server: its first request starts the reaper.
            resumed = await client.read_stream(generation["id"], last_event_id=early.last_id)
            stored = await client.generation(generation["id"])
            replay = await client.read_stream(generation["id"])
    finally:
        restarted.stop()

    assert (stored["status"], stored["reason"]) == ("interrupted", "worker_lost")
    assert stored["last_seq"] == persisted_last and stored["text"] == persisted_text, "every persisted token kept"
    assert resumed.terminal.event == "interrupted"
    assert json.loads(resumed.terminal.data) | {"error": ""} == {
        "seq": persisted_last, "status": "interrupted", "reason": "worker_lost", "error": "",
    }
    assert early.text + resumed.text == persisted_text, "the resumed client gets the rest of the partial text"
    assert replay.text == persisted_text and replay.terminal.event == "interrupted"
    assert "reaped generation" in restarted.log()


async def test_a_server_never_reaps_its_own_generations(start_server):
    """Even when its heartbeat is slower than the staleness threshold, a live run is left alone."""
    server = start_server(
        CHAT_HEARTBEAT_S=1, CHAT_HEARTBEAT_STALE_S=0.2, CHAT_REAPER_INTERVAL_S=0.1, CHAT_SIMULATED_TOKENS_PER_S=60
    )
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        read = await client.read_stream(generation["id"])
    assert read.terminal.event == "done"


async def test_a_live_worker_reaped_by_mistake_stops_and_leaves_a_consistent_stream(start_server):
    """A reaper that wrongly thinks a worker dead (here: a zero staleness) costs the answer, not consistency."""
    # An answer of about half a minute: it must still be running when the reaper's own process has started,
    # which took longer than a 7 s answer on a busy machine; the reap ends it early anyway.
    server = start_server(
        fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20, CHAT_SIMULATED_POINTS=40, CHAT_SIMULATED_MAX_TOKENS=600
    )
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        first = await client.read_stream(generation["id"], max_events=5)
        # A second device follows live across the reap: the worker goes on publishing
        # until its next heartbeat, and the stored end must still win.
        live = asyncio.create_task(client.read_stream(generation["id"]))
        # Reap only once what this client saw is persisted: tokens published but
        # not yet flushed when a worker is reaped are, by design, not part of the answer.
        await persisted_through(client, generation["id"], int(first.last_id))
        out = manage(
            "reap_generations", env={**TEST_ENV, "DATABASE_URL": server.database_url, "CHAT_HEARTBEAT_STALE_S": "0"}
        )
        assert f"{generation['id']} interrupted (worker_lost)" in out
        rest = await client.read_stream(generation["id"], last_event_id=first.last_id)
        # The worker notices at its next heartbeat, and stops.
        await eventually(lambda: "was ended by someone else" in server.log(), what="the worker to stop the ended run")
        replay = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
        live = await asyncio.wait_for(live, 30)
    assert live.answer == stored["text"], "a run that went on past its end is rewound by a snapshot"
    assert (stored["status"], stored["reason"]) == ("interrupted", "worker_lost")
    assert rest.terminal.event == replay.terminal.event == "interrupted"
    assert first.text + rest.text == replay.text == stored["text"]
    assert max(int(e.id) for e in replay.events) == stored["last_seq"], "no chunk past the recorded end"


async def test_after_kill_9_a_client_past_the_stored_end_gets_a_snapshot_without_waiting_for_staleness(
    start_server, tmp_path
):
    """A client holding tokens the killed server never persisted waited 30 s, then got a 400."""
    env = {**KILL_ENV, "CHAT_HEARTBEAT_STALE_S": "3600"}  # Only the dead process can tell.
    server = start_server("sqlite", fresh=True, **env)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        await client.read_stream(generation["id"], max_events=3)
        await persisted_through(client, generation["id"], 1)  # Tokens arrive live before they are stored.
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    chunks = persisted_chunks(server.database_url, generation["id"])
    persisted_text = "".join("".join(tokens) for _first, _last, tokens in chunks)

    restarted = LiveServer(database_url=server.database_url, env=env, workdir=tmp_path).start()
    try:
        async with await logged_in(restarted) as client:
            ahead = chunks[-1][1] + 3  # Sent live, lost with the process.
            resumed = await client.read_stream(generation["id"], last_event_id=str(ahead))
            stored = await client.generation(generation["id"])
    finally:
        restarted.stop()

    assert (stored["status"], stored["reason"]) == ("interrupted", "worker_lost")
    assert "no longer exists" in stored["error"]
    snapshot, end = resumed.events
    assert snapshot.event == "snapshot" and json.loads(snapshot.data)["text"] == persisted_text
    assert end.event == "interrupted" and end.id == snapshot.id == str(stored["last_seq"])
