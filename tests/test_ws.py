"""The WebSocket route over a real Daphne socket, read with the `websockets` client."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.api import issue_token
from tests.support.client import ChatClient, assert_ids_increase, connection_rows
from tests.support.server import USERS
from tests.support.ws import read_ws, session_headers, ws_url

PROMPT = "How does a phone resume a WebSocket stream after a network switch?"


@pytest.fixture
def ws_server(server):
    return server


@pytest.fixture
def backend():
    """The transport is what varies here; one database backend is enough."""
    return "sqlite"


async def test_full_stream_equals_stored_text(ws_server, alice):
    generation = await alice.ask(PROMPT)
    read = await read_ws(ws_server, generation["id"], alice)
    stored = await alice.generation(generation["id"])
    assert read.text == stored["text"] and stored["text"]
    assert_ids_increase([f["seq"] for f in read.tokens], last=stored["last_seq"])
    assert all(f["id"] == f["seq"] for f in read.frames if "seq" in f)
    assert read.terminal == {**read.terminal, "type": "done", "seq": stored["last_seq"], "finish_reason": "stop"}
    assert read.frames[-1] is read.terminal
    assert read.close_code == 1000
    [row] = await connection_rows(ws_server, generation["id"], 1)
    assert row == {
        "transport": "ws",
        "end_reason": "completed",
        "events_sent": len(read.tokens) + 1,
        "tokens_sent": stored["last_seq"],
        "resumed_from": None,
    }


@pytest.mark.parametrize("cut_after", [1, 3, 8])
async def test_resume_after_cut_gives_exact_text(ws_server, alice, cut_after):
    generation = await alice.ask(f"{PROMPT} (cut after {cut_after})")
    frames, last_id = [], None
    for _ in range(200):
        params = {"last_event_id": last_id} if last_id is not None else {}
        read = await read_ws(ws_server, generation["id"], alice, max_tokens=cut_after, **params)
        frames += read.frames
        last_id = read.last_id if read.last_id is not None else last_id
        if read.terminal:
            break
    stored = await alice.generation(generation["id"])
    assert "".join(f["text"] for f in frames if f["type"] == "token") == stored["text"]
    assert_ids_increase([f["id"] for f in frames if f["type"] == "token"], last=stored["last_seq"])
    assert [f["type"] for f in frames if f["type"] != "token"] == ["done"]


async def test_sse_and_ws_resume_each_other(ws_server, alice):
    """One resume rule: a cut SSE stream resumes over a WebSocket with the SSE event id."""
    generation = await alice.ask(PROMPT)
    first = await alice.read_stream(generation["id"], max_events=5)
    rest = await read_ws(ws_server, generation["id"], alice, last_event_id=first.last_id)
    assert first.text + rest.text == (await alice.generation(generation["id"]))["text"]


async def test_two_clients_receive_identical_frames(ws_server, alice):
    async with ChatClient(ws_server.url) as second_device:
        await second_device.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        first, second = await asyncio.gather(
            read_ws(ws_server, generation["id"], alice), read_ws(ws_server, generation["id"], second_device)
        )
    stored = await alice.generation(generation["id"])
    # The same text and end; not the same frames: the one that connects later may get stored chunks.
    for read in (first, second):
        assert read.text == stored["text"]
        assert_ids_increase([f["id"] for f in read.tokens], last=stored["last_seq"])
    assert first.terminal == second.terminal and first.terminal["type"] == "done"


async def test_cancel_over_the_socket(start_server):
    server = start_server("sqlite", CHAT_SIMULATED_TOKENS_PER_S=10)
    async with ChatClient(server.url) as alice:
        await alice.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        read = await read_ws(server, generation["id"], alice, send={"type": "cancel"})
        stored = await alice.generation(generation["id"])
    assert read.terminal["type"] == "cancelled" and read.close_code == 4002
    assert stored["status"] == "cancelled"
    assert read.text == stored["text"] and read.terminal["seq"] == stored["last_seq"]


async def test_keepalive_pings_then_interrupted_close(start_server):
    """An upstream stall: pings keep the socket alive, then `interrupted` closes it with 4000."""
    server = start_server(
        "sqlite",
        CHAT_SIMULATED_STALL_AFTER=3,
        CHAT_UPSTREAM_STALL_S=2,
        CHAT_STREAM_KEEPALIVE_S=0.4,
        CHAT_STREAM_IDLE_CHECK_S=0.2,
    )
    async with ChatClient(server.url) as alice:
        await alice.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        read = await read_ws(server, generation["id"], alice)
        stored = await alice.generation(generation["id"])
    assert [f["type"] for f in read.frames if f["type"] not in ("token", "ping")] == ["interrupted"]
    assert any(f["type"] == "ping" for f in read.frames)
    assert read.terminal["reason"] == "upstream_stall" and read.close_code == 4000
    assert read.text == stored["text"] and read.tokens[-1]["seq"] == stored["last_seq"] == 3


async def test_client_ping_and_unknown_frames(start_server):
    server = start_server("sqlite", CHAT_SIMULATED_TOKENS_PER_S=10)
    async with ChatClient(server.url) as alice:
        await alice.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        url = ws_url(server, generation["id"])
        async with connect(url, origin=server.url, additional_headers=session_headers(alice)) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            await socket.send("not json")
            frames = []
            async with asyncio.timeout(30):
                while not {"pong", "error"} <= {f["type"] for f in frames}:
                    frames.append(json.loads(await socket.recv()))
                await socket.send(json.dumps({"type": "cancel"}))
                with pytest.raises(ConnectionClosed):
                    while True:
                        frames.append(json.loads(await socket.recv()))
    assert next(f for f in frames if f["type"] == "error")["error"]["code"] == "invalid_message"
    assert frames[-1]["type"] == "cancelled" and socket.close_code == 4002


async def test_anonymous_is_rejected(ws_server, alice):
    generation = await alice.ask(PROMPT)
    read = await read_ws(ws_server, generation["id"], None)
    assert read.error["code"] == "unauthenticated" and read.close_code == 4401
    assert not read.tokens


async def test_foreign_generation_is_not_found(ws_server, alice, bob):
    generation = await alice.ask(PROMPT)
    read = await read_ws(ws_server, generation["id"], bob)
    assert read.error["code"] == "not_found" and read.close_code == 4404
    unknown = await read_ws(ws_server, "00000000-0000-0000-0000-000000000000", alice)
    assert unknown.error["code"] == "not_found" and unknown.close_code == 4404


async def test_bad_token_is_rejected_even_with_a_session(ws_server, alice):
    generation = await alice.ask(PROMPT)
    by_protocol = await read_ws(ws_server, generation["id"], alice, subprotocols=["llm-stream.v1", "bearer.nope"])
    assert by_protocol.error["code"] == "invalid_token" and by_protocol.close_code == 4401
    assert by_protocol.subprotocol == "llm-stream.v1", "the token itself is not echoed when another protocol is offered"
    by_query = await read_ws(ws_server, generation["id"], None, access_token="nope")
    assert by_query.error["code"] == "invalid_token" and by_query.close_code == 4401


async def test_bearer_token_authenticates(ws_server, alice):
    generation = await alice.ask(PROMPT)
    token = await issue_token(ws_server.url, "alice")
    by_protocol = await read_ws(ws_server, generation["id"], None, subprotocols=[f"bearer.{token}"])
    assert by_protocol.subprotocol == f"bearer.{token}"
    by_query = await read_ws(ws_server, generation["id"], None, access_token=token)
    stored = await alice.generation(generation["id"])
    assert by_protocol.text == by_query.text == stored["text"]
    assert by_protocol.close_code == by_query.close_code == 1000
    bobs = await issue_token(ws_server.url, "bob")
    foreign = await read_ws(ws_server, generation["id"], None, subprotocols=[f"bearer.{bobs}"])
    assert foreign.error["code"] == "not_found" and foreign.close_code == 4404


async def test_foreign_origin_and_missing_origin_are_refused(ws_server, alice):
    generation = await alice.ask(PROMPT)
    for origin in ("http://evil.example", None):
        with pytest.raises(InvalidStatus) as refused:
            url = ws_url(ws_server, generation["id"])
            async with connect(url, origin=origin, additional_headers=session_headers(alice)):
                pass
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999"])
async def test_bad_last_event_id(ws_server, alice, value):
    generation = await alice.ask(PROMPT)
    read = await read_ws(ws_server, generation["id"], alice, last_event_id=value)
    assert read.error["code"] == "invalid_last_event_id" and read.error["field"] == "last_event_id"
    assert read.close_code == 4400 and not read.tokens


async def test_last_event_id_past_the_end(ws_server, alice):
    """Past the stored end (tokens a killed server never persisted): the stored text as a snapshot, then the end."""
    generation = await alice.ask(PROMPT)
    done = await read_ws(ws_server, generation["id"], alice)
    stored = await alice.generation(generation["id"])
    read = await read_ws(ws_server, generation["id"], alice, last_event_id=done.terminal["seq"] + 3)
    snapshot, end = read.frames
    assert (snapshot["type"], snapshot["seq"], snapshot["text"]) == ("snapshot", stored["last_seq"], stored["text"])
    assert (end["type"], end["seq"], read.close_code) == ("done", stored["last_seq"], 1000)
