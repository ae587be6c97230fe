"""Retention: prune_streams deletes the token chunks and connection rows of old generations, and a client
that resumes a pruned generation gets its whole text in one `snapshot` event, never a silent partial."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat.models import Message, StreamConnection, TokenChunk
from tests.support import factories
from tests.support.client import ChatClient
from tests.support.server import TEST_ENV, USERS, manage
from tests.support.ws import read_ws

DAY = 86400
TEXT = "Resume by event id, then replay from the database."


def prune(*args) -> str:
    out = StringIO()
    call_command("prune_streams", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def generations(db):
    cut = [{"end_reason": "client_gone"}, {"resumed_from": 3}]
    return {
        "old": factories.generation(status="complete", age_s=40 * DAY, connections=cut),
        "old_interrupted": factories.generation(status="interrupted", reason="upstream_stall", age_s=31 * DAY),
        "recent": factories.generation(status="complete", age_s=2 * DAY, connections=cut),
        # Old but still running (its worker is gone; the reaper, not retention, deals with it).
        "old_running": factories.generation(status="streaming", age_s=40 * DAY, heartbeat_age_s=40 * DAY),
    }


def chunk_counts(generations) -> dict:
    return {name: TokenChunk.objects.filter(generation=g).count() for name, g in generations.items()}


def test_prune_deletes_chunks_and_connections_of_old_finished_generations(generations):
    out = prune("--older-than", "30d")
    assert "Deleted 8 token chunk(s) and 2 connection row(s) of 2 generation(s)" in out
    assert chunk_counts(generations) == {"old": 0, "old_interrupted": 0, "recent": 4, "old_running": 4}
    assert not StreamConnection.objects.filter(generation=generations["old"]).exists()
    assert StreamConnection.objects.filter(generation=generations["recent"]).count() == 2
    for generation in generations.values():
        message = Message.objects.get(pk=generation.assistant_message_id)
        assert message.content == (TEXT if generation.status != "streaming" else ""), "texts stay"
    assert "Deleted 0 token chunk(s) and 0 connection row(s) of 0 generation(s)" in prune("--older-than", "30d")


def test_prune_dry_run_deletes_nothing(generations):
    out = prune("--older-than", "30d", "--dry-run")
    assert "Would delete 8 token chunk(s) and 2 connection row(s) of 2 generation(s)" in out
    assert chunk_counts(generations) == {"old": 4, "old_interrupted": 4, "recent": 4, "old_running": 4}


@pytest.mark.parametrize("age, pruned", [("1d", 3), ("36h", 3), ("35d", 1), ("3w", 2), ("60", 0), ("0s", 3)])
def test_prune_ages_and_units(generations, age, pruned):
    prune("--older-than", age)
    assert sum(count == 0 for count in chunk_counts(generations).values()) == pruned


def test_prune_defaults_to_the_retention_setting(generations, settings):
    settings.CHAT_RETENTION_DAYS = 35
    assert "finished more than 35d ago" in prune()
    assert chunk_counts(generations)["old"] == 0 and chunk_counts(generations)["old_interrupted"] == 4


@pytest.mark.parametrize("age", ["abc", "-3d", "30 days", "d"])
def test_prune_rejects_a_bad_age_clearly(db, age):
    with pytest.raises(CommandError, match="--older-than must be a number with an optional unit"):
        prune(f"--older-than={age}")


# --- Resuming a pruned generation, over a real server ------------------------------------


async def finished_generation(server) -> tuple[ChatClient, dict]:
    client = await ChatClient(server.url).login("alice", USERS["alice"])
    generation = await client.ask("What happens to old streams after retention?")
    read = await client.read_stream(generation["id"])
    assert read.terminal.event == "done"
    return client, await client.generation(generation["id"])


def prune_server_database(server, *args) -> str:
    return manage("prune_streams", *args, env={**TEST_ENV, "DATABASE_URL": server.database_url})


async def test_resuming_a_pruned_generation_over_sse_gives_one_snapshot_then_the_end(start_server, backend):
    server = start_server(backend, fresh=True)
    client, stored = await finished_generation(server)
    async with client:
        assert "of 1 generation(s)" in prune_server_database(server, "--older-than", "0s")
        whole = await client.read_stream(stored["id"])
        partway = await client.read_stream(stored["id"], last_event_id="5")
        at_end = await client.read_stream(stored["id"], last_event_id=str(stored["last_seq"]))
        after = await client.generation(stored["id"])
    for read in (whole, partway):
        assert [(e.event, e.id) for e in read.events] == [("snapshot", str(stored["last_seq"])), ("done", str(stored["last_seq"]))]
        assert json.loads(read.events[0].data) == {"seq": stored["last_seq"], "text": stored["text"]}
    assert [e.event for e in at_end.events] == ["done"], "a client that has everything gets only the end"
    assert after["text"] == stored["text"] and after["status"] == "complete"


async def test_a_pruned_generation_is_never_a_silent_partial_over_sse(start_server):
    """The bytes on the wire: no token event, the snapshot's data carries the whole stored text."""
    server = start_server(fresh=True)
    client, stored = await finished_generation(server)
    async with client:
        prune_server_database(server, "--older-than", "0s")
        async with client.http.stream("GET", f"/api/generations/{stored['id']}/stream") as response:
            body = "".join([chunk async for chunk in response.aiter_text()])
    assert "event: token" not in body
    assert body.count("event: snapshot") == 1 and body.index("event: snapshot") < body.index("event: done")
    assert f"id: {stored['last_seq']}\nevent: snapshot\ndata: " in body



async def test_resuming_a_pruned_generation_over_websocket_gives_one_snapshot_then_the_end(start_server):
    server = start_server(fresh=True)
    client, stored = await finished_generation(server)
    async with client:
        prune_server_database(server, "--older-than", "0s")
        whole = await read_ws(server, stored["id"], client)
        partway = await read_ws(server, stored["id"], client, last_event_id="5")
        at_end = await read_ws(server, stored["id"], client, last_event_id=str(stored["last_seq"]))
    last = stored["last_seq"]
    for read in (whole, partway):
        assert [(f["type"], f["id"]) for f in read.frames] == [("snapshot", last), ("done", last)]
        assert read.frames[0] == {"type": "snapshot", "id": last, "seq": last, "text": stored["text"]}
    assert [f["type"] for f in at_end.frames] == ["done"]
    assert whole.close_code == 1000


def test_prune_forgets_expired_idempotency_keys(generations, settings):
    from datetime import timedelta

    from django.utils import timezone

    from chat.models import IdempotencyKey

    old = generations["old"]
    owner = old.conversation.owner
    fresh = IdempotencyKey.objects.create(
        user=owner, key="fresh", fingerprint="a" * 64, status_code=201, message=old.user_message, generation=old
    )
    stale = IdempotencyKey.objects.create(
        user=owner, key="stale", fingerprint="b" * 64, status_code=201, message=old.user_message, generation=old
    )
    IdempotencyKey.objects.filter(pk=stale.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.CHAT_IDEMPOTENCY_TTL_S + 60)
    )
    assert "and 1 expired idempotency key(s)" in prune("--older-than", "30d", "--dry-run")
    assert "and 1 expired idempotency key(s)" in prune("--older-than", "365d")
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == [fresh.key]
