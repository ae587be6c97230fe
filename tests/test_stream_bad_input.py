"""Bad input gets a clear 4xx in the one error shape, and nothing is created by it."""

import json
import uuid

import pytest

from tests.support.api import error_of
from tests.support.client import ChatClient

PROMPT = "What is a good retry policy?"


@pytest.fixture
async def finished(alice):
    generation = await alice.ask(PROMPT)
    await alice.read_stream(generation["id"])
    return await alice.generation(generation["id"])


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "9" * 30 + "x", "9" * 30, "3 4", "+3"])
async def test_invalid_last_event_id(alice, finished, value):
    response = await alice.http.get(f"/api/generations/{finished['id']}/stream", headers={"Last-Event-ID": value})
    error = error_of(response, 400)
    assert error["code"] == "invalid_last_event_id" and error["field"] == "Last-Event-ID"


async def test_invalid_last_event_id_query_parameter(alice, finished):
    response = await alice.http.get(f"/api/generations/{finished['id']}/stream", params={"last_event_id": "-5"})
    assert error_of(response, 400)["field"] == "last_event_id"


async def test_last_event_id_past_the_end_of_a_finished_stream(alice, finished):
    """A client holding tokens that a killed server never persisted got a 400 and kept its wrong text."""
    read = await alice.read_stream(finished["id"], last_event_id=str(finished["last_seq"] + 5))
    snapshot, end = read.events
    assert (snapshot.event, snapshot.id) == ("snapshot", str(finished["last_seq"]))
    assert json.loads(snapshot.data)["text"] == finished["text"]
    assert (end.event, end.id) == ("done", str(finished["last_seq"]))


async def test_invalid_coalesce_window(alice, finished):
    for value in ["-1", "x", "100000"]:
        response = await alice.http.get(f"/api/generations/{finished['id']}/stream", params={"coalesce_ms": value})
        assert error_of(response, 400)["field"] == "coalesce_ms"


async def test_unknown_generation(alice):
    for path in ["", "/stream", "/cancel"]:
        method = alice.post if path == "/cancel" else alice.http.get
        response = await method(f"/api/generations/{uuid.uuid4()}{path}")
        assert error_of(response, 404)["code"] == "not_found"


async def test_someone_elses_generation_is_not_found(alice, bob, finished):
    for path in ["", "/stream", "/cancel"]:
        method = bob.post if path == "/cancel" else bob.http.get
        error_of(await method(f"/api/generations/{finished['id']}{path}"), 404)
    assert (await alice.generation(finished["id"]))["status"] == "complete"


async def test_someone_elses_conversation_is_not_found(alice, bob):
    conversation_id = await alice.new_conversation()
    response = await bob.post(f"/api/conversations/{conversation_id}/messages", json={"content": PROMPT})
    error_of(response, 404)


async def test_unauthenticated_requests_are_refused(server, finished):
    async with ChatClient(server.url) as anonymous:
        for path in ["", "/stream"]:
            response = await anonymous.http.get(f"/api/generations/{finished['id']}{path}")
            assert error_of(response, 401)["code"] == "unauthenticated"


async def test_malformed_json(alice):
    conversation_id = await alice.new_conversation()
    response = await alice.post(
        f"/api/conversations/{conversation_id}/messages",
        content=b'{"content": "unterminated',
        headers={"Content-Type": "application/json"},
    )
    assert error_of(response, 400)["code"] == "malformed_json"


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 40_000}, "content"),
        ({"content": "hi", "stream": "sometimes"}, "stream"),
        ({"content": "hi", "response_format": "xml"}, "response_format"),
        ({}, "content"),
    ],
)
async def test_invalid_message(alice, payload, field):
    conversation_id = await alice.new_conversation()
    response = await alice.post(f"/api/conversations/{conversation_id}/messages", json=payload)
    assert error_of(response, 400)["field"] == field


async def test_session_requests_need_csrf(server):
    from tests.support.server import USERS

    async with ChatClient(server.url) as client:
        await client.login("alice", USERS["alice"])
        response = await client.http.post("/api/conversations", json={"title": "no csrf header"})
        assert response.status_code == 403
