"""The per-user live channel /api/events/ (django-eventstream), over a real socket."""

import asyncio
import json
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import require_backend, require_redis
from tests.support.api import api_client
from tests.support.client import ChatClient
from tests.support.server import USERS, LiveServer
from tests.support.wait import eventually

PROMPT = "How does a second device learn about new chats?"


class Channel:
    """One connection to /api/events/, read in the background."""

    def __init__(self, http: httpx.AsyncClient, last_event_id: str | None = None, params=None):
        self.http = http
        self.last_event_id = last_event_id
        self.params = params
        self.events: list = []
        self.opened = asyncio.Event()
        self.status_code: int | None = None
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        async with aconnect_sse(
            self.http, "GET", "/api/events/", headers=headers, params=self.params, timeout=None
        ) as source:
            self.status_code = source.response.status_code
            if self.status_code != 200:
                await source.response.aread()
                self.opened.set()
                return
            async for event in source.aiter_sse():
                if event.event == "stream-open":
                    self.opened.set()
                elif event.event != "keep-alive":
                    self.events.append(event)

    def data(self, kind: str) -> list[dict]:
        return [json.loads(e.data) for e in self.events if e.event == kind]

    async def wait_for(self, predicate):
        """The first event matching `predicate(event_name, data)`, waiting for it if need be."""
        def matches(event) -> bool:
            return predicate(event.event, json.loads(event.data))

        events = await eventually(
            lambda: list(self.events), until=lambda events: any(map(matches, events)), what="a matching event"
        )
        return next(filter(matches, events))


@asynccontextmanager
async def listening(http: httpx.AsyncClient, last_event_id: str | None = None, params=None):
    channel = Channel(http, last_event_id, params)
    channel.task = asyncio.get_running_loop().create_task(channel.run())
    try:
        await asyncio.wait_for(channel.opened.wait(), 30)
        yield channel
    finally:
        channel.task.cancel()
        try:
            await channel.task
        except (asyncio.CancelledError, httpx.HTTPError):
            pass


def about(conversation_id):
    return lambda name, data: data.get("conversation_id") == conversation_id


async def test_a_second_device_sees_chats_and_answers(server):
    """Device two (bearer token) follows what device one (a browser session) does."""
    async with ChatClient(server.url) as browser, api_client(server.url, "alice") as phone:
        await browser.login("alice", USERS["alice"])
        async with listening(phone.http) as channel:
            conversation_id = await browser.new_conversation("Trip to Lisbon")
            created = await channel.wait_for(lambda n, d: n == "conversation.created" and d["conversation_id"] == conversation_id)
            assert json.loads(created.data)["conversation"]["title"] == "Trip to Lisbon"
            assert created.id and created.id.endswith(":" + created.id.rsplit(":", 1)[1])

            response = await browser.http.patch(
                f"/api/conversations/{conversation_id}", json={"title": "Lisbon, May"}, headers=browser.csrf
            )
            assert response.status_code == 200
            renamed = await channel.wait_for(lambda n, d: n == "conversation.renamed" and d["conversation_id"] == conversation_id)
            assert json.loads(renamed.data)["conversation"]["title"] == "Lisbon, May"

            generation = await browser.ask(PROMPT, conversation_id=conversation_id)
            started = await channel.wait_for(lambda n, d: n == "generation.started" and d["generation_id"] == generation["id"])
            completed = await channel.wait_for(lambda n, d: n == "generation.completed" and d["generation_id"] == generation["id"])
            data = json.loads(completed.data)
            assert data["status"] == "complete" and data["conversation_id"] == conversation_id
            assert data["stream_url"] == generation["stream_url"] and data["ws_url"] == f"/ws/generations/{generation['id']}/"
            assert (data["finish_reason"], data["reason"]) == ("stop", "")
            assert data["user_message_id"] == generation["user_message_id"]
            assert data["assistant_message_id"] == generation["assistant_message_id"]
            assert json.loads(started.data)["status"] in ("queued", "streaming")
            assert (data["parts"], json.loads(started.data)["parts"]) == (["text"], [])

            thought = await browser.ask(PROMPT, conversation_id=conversation_id, model="simulated-reasoning")
            ended = await channel.wait_for(lambda n, d: n == "generation.completed" and d["generation_id"] == thought["id"])
            assert json.loads(ended.data)["parts"] == ["reasoning", "text"]

            cancelled_one = await browser.ask("Another question, to cancel", conversation_id=conversation_id)
            await browser.post(f"/api/generations/{cancelled_one['id']}/cancel")
            await channel.wait_for(lambda n, d: n == "generation.cancelled" and d["generation_id"] == cancelled_one["id"])

            assert (await browser.http.delete(f"/api/conversations/{conversation_id}", headers=browser.csrf)).status_code == 204
            await channel.wait_for(lambda n, d: n == "conversation.deleted" and d["conversation_id"] == conversation_id)

            ids = [int(e.id.rsplit(":", 1)[1]) for e in channel.events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids only go up"


async def test_resume_after_a_cut_replays_what_was_missed(alice_api):
    async with listening(alice_api.http) as channel:
        first = await alice_api.new_conversation("before the cut")
        seen = await channel.wait_for(about(first["id"]))
    # Offline: two chats are created meanwhile, from elsewhere.
    missed = [await alice_api.new_conversation(f"while away {n}") for n in range(2)]
    for last_event_id in (seen.id, seen.id.rsplit(":", 1)[1]):  # The full id, or just its number.
        async with listening(alice_api.http, last_event_id=last_event_id) as resumed:
            for conversation in missed:
                await resumed.wait_for(about(conversation["id"]))
            replayed = [json.loads(e.data)["conversation_id"] for e in resumed.events]
            assert first["id"] not in replayed, "nothing from before the last id"
            assert replayed[:2] == [c["id"] for c in missed], "in order"


async def test_the_channel_is_private(server):
    async with api_client(server.url, "alice") as alice, api_client(server.url, "bob") as bob:
        async with listening(bob.http) as bobs, listening(alice.http) as alices:
            secret = await alice.new_conversation("alice only")
            alice_id = (await alices.wait_for(about(secret["id"]))).id
            # Sent after alice's event reached her: a channel that leaked it would have sent it first.
            marker = await bob.new_conversation("bob's marker")
            await bobs.wait_for(about(marker["id"]))
            assert secret["id"] not in [json.loads(e.data).get("conversation_id") for e in bobs.events]
        # Alice's channel ids are no good to bob.
        response = await bob.http.get("/api/events/", headers={"Last-Event-ID": alice_id})
        assert response.status_code == 400 and response.json()["error"]["field"] == "Last-Event-ID"


@pytest.mark.parametrize("value", ["abc", "-1", "user-1:-1", "1,2", "user-1:1,user-2:1", "9" * 30])
async def test_bad_last_event_ids(alice_api, value):
    response = await alice_api.http.get("/api/events/", headers={"Last-Event-ID": value})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_last_event_id",
        "message": response.json()["error"]["message"],
        "field": "Last-Event-ID",
    }


async def test_authentication(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/events/")
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
        response = await http.get("/api/events/", headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    # Parameters that would pick another channel are ignored.
    async with api_client(server.url, "alice") as alice, api_client(server.url, "bob") as bob:
        bob_channel = "user-2"
        params = {"channel": bob_channel, "channels": bob_channel, "es-meta": "x", "recover": "true"}
        async with listening(alice.http, params=params) as channel:
            marker = await bob.new_conversation("bob again")
            mine = await alice.new_conversation("mine")
            await channel.wait_for(about(mine["id"]))
            assert marker["id"] not in [json.loads(e.data).get("conversation_id") for e in channel.events]
        response = await alice.http.post("/api/events/")
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


async def test_ids_survive_a_restart(database_templates, tmp_path):
    database_url = database_templates.fresh("sqlite")
    server = LiveServer(database_url=database_url, env={}, workdir=tmp_path).start()
    try:
        async with api_client(server.url, "alice") as alice:
            async with listening(alice.http) as channel:
                before = await alice.new_conversation("before the restart")
                last_id = (await channel.wait_for(about(before["id"]))).id
            after = await alice.new_conversation("after the cut")
    finally:
        server.stop()
    server = LiveServer(database_url=database_url, env={}, workdir=tmp_path).start()
    try:
        async with api_client(server.url, "alice") as alice:
            async with listening(alice.http, last_event_id=last_id) as channel:
                replayed = await channel.wait_for(about(after["id"]))
                assert int(replayed.id.rsplit(":", 1)[1]) == int(last_id.rsplit(":", 1)[1]) + 1
    finally:
        server.stop()


async def test_an_event_from_another_process_reaches_the_listener(database_templates, tmp_path):
    """Two processes share PostgreSQL (storage) and Redis (publish): a change on B reaches a listener on A."""
    from tests.test_scale_out import REDIS_URL

    require_backend("postgres")
    require_redis()
    database_url = database_templates.fresh("postgres")
    # Redis pub/sub is global: a namespace of our own keeps other test servers' events out.
    env = {"REDIS_URL": REDIS_URL, "CHAT_EVENTS_NAMESPACE": f"t{uuid.uuid4().hex[:8]}-"}
    a, b = (LiveServer(database_url=database_url, env=env, workdir=tmp_path).start() for _ in range(2))
    try:
        async with api_client(a.url, "alice") as on_a, api_client(b.url, "alice") as on_b:
            async with listening(on_a.http) as channel:
                conversation = await on_b.new_conversation("made on B")
                await channel.wait_for(about(conversation["id"]))
                answer = await on_b.ask(PROMPT, conversation_id=conversation["id"])
                generation_id = answer["generation"]["id"]
                await channel.wait_for(lambda n, d: n == "generation.completed" and d.get("generation_id") == generation_id)
                last_id = channel.events[-1].id
            # And resuming on B from an id that A gave works: the ids live in the shared database.
            later = await on_a.new_conversation("made on A, while nobody listened")
            async with listening(on_b.http, last_event_id=last_id) as resumed:
                await resumed.wait_for(about(later["id"]))
    finally:
        a.stop()
        b.stop()
