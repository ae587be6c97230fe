"""Admission: per-user and per-process stream caps over every transport, overload (a late loop,
answers left starting), and no leaks."""

import asyncio
import json
import os
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import websockets

from chat.errors import ApiError
from chat.server.admission import LAG_SAMPLE_S, Admission
from tests.conftest import require_redis
from tests.support.api import api_client
from tests.support.wait import eventually

# Answers that run for minutes: the streams stay open for as long as a test holds them.
LONG = {"CHAT_SIMULATED_TOKENS_PER_S": "2", "CHAT_SIMULATED_POINTS": "40", "CHAT_SIMULATED_MAX_TOKENS": "2000"}


@asynccontextmanager
async def open_sse(client, generation_id: str):
    """An SSE stream held open (headers received) until the block ends."""
    async with client.http.stream("GET", f"/api/generations/{generation_id}/stream") as response:
        yield response


def ws_url(server, client, generation_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/generations/{generation_id}/?access_token={client.token}"


async def refused_frame(server, client, generation_id: str) -> tuple[dict, int]:
    async with websockets.connect(ws_url(server, client, generation_id)) as socket:
        frame = json.loads(await socket.recv())
        await socket.wait_closed()
        return frame, socket.close_code


async def test_one_user_cannot_hold_more_than_their_streams_across_transports(start_server):
    server = start_server("sqlite", fresh=True, CHAT_MAX_STREAMS_PER_USER=3, **LONG)
    async with api_client(server.url, "alice") as alice, api_client(server.url, "bob") as bob, AsyncExitStack() as held:
        generation = (await alice.ask("a long answer"))["generation"]["id"]
        for _ in range(2):
            response = await held.enter_async_context(open_sse(alice, generation))
            assert response.status_code == 200
        events = await held.enter_async_context(alice.http.stream("GET", "/api/events/"))
        assert events.status_code == 200

        refused = await alice.http.get(f"/api/generations/{generation}/stream")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["code"] == "too_many_streams"
        frame, code = await refused_frame(server, alice, generation)
        assert (frame["type"], frame["error"]["code"], frame["retry_after"], code) == (
            "error", "too_many_streams", 5, 4429,
        )
        channel = await alice.http.get("/api/events/")
        assert channel.status_code == 429 and channel.json()["error"]["code"] == "too_many_streams"
        durable = await alice.http.get(f"/ds/v1/stream/generations/{generation}", params={"offset": "-1", "live": "sse"})
        assert durable.status_code == 429 and durable.headers["Retry-After"] == "5"

        # Someone else is not affected.
        bobs = (await bob.ask("bob's answer"))["generation"]["id"]
        async with open_sse(bob, bobs) as response:
            assert response.status_code == 200

        # A stream that closes gives its slot back.
        await held.aclose()

        async def reopened():
            async with open_sse(alice, generation) as response:
                return response.status_code

        assert await eventually(reopened, until=lambda status: status == 200, what="a slot given back")


async def test_a_process_holds_at_most_its_streams(start_server):
    server = start_server("sqlite", fresh=True, CHAT_MAX_STREAMS_PER_PROCESS=2, **LONG)
    async with api_client(server.url, "alice") as alice, api_client(server.url, "bob") as bob:
        generation = (await alice.ask("a long answer"))["generation"]["id"]
        async with open_sse(alice, generation), open_sse(alice, generation):
            bobs = (await bob.ask("bob's answer"))["generation"]["id"]
            refused = await bob.http.get(f"/api/generations/{bobs}/stream")
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "server_full"
            assert refused.headers["Retry-After"] == "5"


async def test_with_redis_a_users_streams_are_counted_across_processes(start_server):
    require_redis()
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "CHAT_EVENTS_NAMESPACE": f"t{uuid.uuid4().hex[:8]}:", **LONG}
    first = start_server("postgres", fresh=True, CHAT_MAX_STREAMS_PER_USER=2, **env)
    second = start_server("postgres", fresh=True, CHAT_MAX_STREAMS_PER_USER=2, **env)
    async with api_client(first.url, "alice") as alice, api_client(second.url, "alice") as alice_too:
        generation = (await alice.ask("a long answer"))["generation"]["id"]
        other = (await alice_too.ask("another"))["generation"]["id"]
        async with open_sse(alice, generation):
            async with open_sse(alice_too, other):
                # The user ids match across the two databases, and so does the Redis namespace.
                refused = await alice.http.get(f"/api/generations/{generation}/stream")
                assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"


async def test_a_late_event_loop_refuses_new_work_with_503():
    """Past the lag limit, new streams and answers get 503 so that the open ones keep their pace."""
    from django.test import override_settings

    with override_settings(CHAT_OVERLOAD_LAG_MS=100, REDIS_URL=""):
        admission = Admission()
        try:
            await admission.open_stream(1)  # At rest: admitted.
            await eventually(lambda: admission.lag.samples > 0, what="the lag sampler to be sampling")
            time.sleep(0.4)  # The loop is stuck: its lag sampler wakes 0.4 s late.
            await eventually(lambda: admission.lag.lag > 0.1, what="the lag sampler to see the stall")
            with pytest.raises(ApiError) as refused:
                await admission.open_stream(1)
            assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, "overloaded", 5)
            # The lag fades once the loop keeps time again, and work is admitted.
            await eventually(lambda: admission.lag.lag < 0.1, what="the lag to fade", interval=LAG_SAMPLE_S)
            await admission.open_stream(1)
        finally:
            admission.lag.task.cancel()


def backdate(admission: Admission, seconds: float) -> None:
    """The answers being created began `seconds` earlier (so a test need not wait for them to age)."""
    for key in admission.starting:
        admission.starting[key] -= seconds


async def test_an_answer_left_starting_too_long_refuses_new_ones_with_503():
    """A burst of answers waits for the database threads while the loop keeps time: their age is the measure."""
    from django.test import override_settings

    with override_settings(CHAT_OVERLOAD_START_MS=1000, CHAT_OVERLOAD_LAG_MS=0, REDIS_URL=""):
        admission = Admission()
        try:
            with admission.starting_answer():
                with admission.starting_answer():  # Another while the first is young: admitted.
                    pass
                backdate(admission, 2)
                with pytest.raises(ApiError) as refused:
                    with admission.starting_answer():
                        pass
                assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, "overloaded", 5)
                await admission.open_stream(1)  # Streams of answers already made are not refused for it.
            assert admission.starting == {}
            with admission.starting_answer():  # The late one was launched: admitted again.
                pass
        finally:
            admission.lag.task.cancel()


@pytest.mark.django_db(transaction=True)
async def test_a_new_message_is_refused_while_an_answer_is_left_starting():
    from django.test import override_settings

    from chat import actions
    from chat.db import db_work
    from chat.models import Conversation, Message
    from chat.server.admission import get_admission
    from tests.support import factories

    alice, bob = await db_work(factories.user)("alice"), await db_work(factories.user)("bob")
    bobs = await Conversation.objects.acreate(owner=bob, title="bob's")
    admission = get_admission()
    try:
        with override_settings(CHAT_OVERLOAD_START_MS=1000, CHAT_OVERLOAD_LAG_MS=0):
            with admission.starting_answer():
                backdate(admission, 2)
                with pytest.raises(ApiError) as refused:
                    await actions.message_post(conversation_id=bobs.pk, owner_id=bob.pk, content="hello")
                assert (refused.value.status, refused.value.code) == (503, "overloaded")
            # Admitted now: the transaction runs, and finds the conversation is not alice's.
            with pytest.raises(ApiError) as not_hers:
                await actions.message_post(conversation_id=bobs.pk, owner_id=alice.pk, content="hello")
            assert not_hers.value.status == 404
            assert admission.starting == {}, "a refused or failed answer is no longer counted as starting"
        assert not await Message.objects.filter(conversation=bobs).aexists(), "a refused message creates nothing"
    finally:
        admission.lag.task.cancel()


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def postgres_connections(database: str) -> int:
    import psycopg

    from tests.support.server import POSTGRES_ADMIN_URL

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        return connection.execute("select count(*) from pg_stat_activity where datname = %s", (database,)).fetchone()[0]


async def test_hundreds_of_streams_leave_no_threads_files_or_connections_behind(start_server, backend):
    """A burst of streams left ~150 SQLite handles open for good, and idle PostgreSQL connections for minutes."""
    server = start_server(backend, fresh=True, CHAT_DB_THREADS=4)
    pid = server.process.pid
    database = server.database_url.rsplit("/", 1)[1]
    async with api_client(server.url, "alice") as alice:
        finished = (await alice.ask("a short answer"))["generation"]["id"]
        await alice.wait_terminal(finished)
        await alice.read_stream(finished)  # Warm: the shared database threads exist now.
        baseline_files, baseline_threads = open_files(pid), threads(pid)

        async def burst(count: int):
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {alice.token}"},
                                         timeout=60, limits=httpx.Limits(max_connections=count)) as http:
                async def one():
                    async with http.stream("GET", f"/api/generations/{finished}/stream") as response:
                        assert response.status_code == 200
                        body = b"".join([chunk async for chunk in response.aiter_bytes()])
                    assert b"event: done" in body
                await asyncio.gather(*(one() for _ in range(count)))

        for _ in range(3):
            await burst(100)
            if backend == "postgres":
                assert postgres_connections(database) <= 8, "database connections are bounded by the shared threads"

    # Bounded by the pools whatever the burst (the background pool may have grown to its 4 threads,
    # each with a connection: up to 3 files on SQLite), nothing per stream: 300 streams would be 300+.
    pool = 4
    await eventually(lambda: threads(pid) <= baseline_threads + pool, what=f"threads back near {baseline_threads}")
    await eventually(
        lambda: open_files(pid) <= baseline_files + 3 * pool, what=f"open files back near {baseline_files}"
    )
    if backend == "postgres":
        assert postgres_connections(database) <= 8  # CHAT_DB_THREADS for requests, as many for background work.
