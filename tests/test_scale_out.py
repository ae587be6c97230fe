"""Several ASGI processes behind one PostgreSQL and one Redis: any process serves any stream."""

import asyncio

import pytest

from tests.conftest import require_backend, require_redis
from tests.support.client import ChatClient
from tests.support.server import REDIS_URL, USERS, LiveServer


@pytest.fixture(scope="module")
def two_servers(database_templates, tmp_path_factory):
    require_backend("postgres")
    require_redis()
    database_url = database_templates.fresh("postgres")
    workdir = tmp_path_factory.mktemp("scale-out")
    env = {"REDIS_URL": REDIS_URL, "CHAT_SIMULATED_TOKENS_PER_S": "40"}
    # B never looks in the database for news while following (it would after 600 s of
    # silence): what reaches its clients after their replay came from A over Redis.
    servers = [
        LiveServer(database_url=database_url, env=env | extra, workdir=workdir).start()
        for extra in ({}, {"CHAT_STREAM_IDLE_CHECK_S": "600"})
    ]
    yield servers
    for server in servers:
        server.stop()


async def clients(servers):
    return [await ChatClient(server.url).login("alice", USERS["alice"]) for server in servers]


async def test_stream_follows_a_generation_running_in_another_process(two_servers):
    a, b = await clients(two_servers)
    async with a, b:
        generation = await a.ask("What does a channel layer do?")
        on_b, on_a = await asyncio.gather(b.read_stream(generation["id"]), a.read_stream(generation["id"]))
        stored = await a.generation(generation["id"])
    # Live over Redis, not only replayed: B learns of new tokens and of the end only from A.
    assert on_b.terminal.event == "done"
    assert on_b.text == on_a.text == stored["text"]


async def test_resume_on_another_process(two_servers):
    a, b = await clients(two_servers)
    async with a, b:
        generation = await a.ask("How do load balancers pick a backend?")
        first = await a.read_stream(generation["id"], max_events=5)
        rest = await b.read_stream(generation["id"], last_event_id=first.last_id)
        stored = await b.generation(generation["id"])
    assert first.text + rest.text == stored["text"]


async def test_cancel_from_another_process(two_servers):
    a, b = await clients(two_servers)
    async with a, b:
        generation = await a.ask("Write a long essay about distributed consensus")
        await a.read_stream(generation["id"], max_events=3)
        response = await b.post(f"/api/generations/{generation['id']}/cancel")
        follow = await a.read_stream(generation["id"])
    assert response.json()["status"] == "cancelled"
    assert follow.terminal.event == "cancelled"
