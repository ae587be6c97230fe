"""Property-based tests of the frames a client sends on the WebSocket, on every backend (issue 27).

Whatever a client sends (any text, JSON of any shape, nested 100,000 deep,
binary), each frame gets an answer (a pong or an `invalid_message` error
frame), the stream goes on, and no close is a 1011. Afterwards every stream
slot of the user is free again.
"""

import asyncio
import json

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.api import issue_token
from tests.support.fuzz import FUZZ
from tests.support.wait import eventually_sync

SLOTS = 3
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.text(max_size=20)}).map(json.dumps),
    st.sampled_from(['{"type": "ping"}', '{"type": null}', '{"type": ["ping"]}', "[]", "null", "\x00"]),
    # Deep, within the servers' 1 MiB frame limit (Daphne drops the connection past it).
    st.integers(min_value=1, max_value=100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=100_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def running(request, start_server):
    """A slow answer of alice's that streams throughout, on a server allowing her SLOTS streams."""
    server = start_server(
        request.param, CHAT_MAX_STREAMS_PER_USER=SLOTS, CHAT_SIMULATED_TOKENS_PER_S=1, CHAT_SIMULATED_MAX_TOKENS=100000
    )
    token = asyncio.run(issue_token(server.url, "alice"))
    bearer = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{server.url}/api/conversations", json={"title": "frames"}, headers=bearer).json()
    generation = httpx.post(
        f"{server.url}/api/conversations/{conversation['id']}/messages", json={"content": "Hi", "stream": True}, headers=bearer
    ).json()["generation"]["id"]
    url = f"ws://127.0.0.1:{server.port}/ws/generations/{generation}/"
    options = {"subprotocols": ["llm-stream.v1", f"bearer.{token}"], "origin": server.url, "open_timeout": 30}
    yield url, options
    httpx.post(f"{server.url}/api/generations/{generation}/cancel", headers=bearer)


@FUZZ
@given(sent=st.lists(frames, min_size=1, max_size=4))
@example(sent=["[" * 100_000 + "]" * 100_000])
@example(sent=[b"\xff\xfe", '{"type": "ping"}'])
def test_websocket_frames(running, sent):
    url, options = running
    with connect(url, max_size=None, **options) as ws:
        for frame in sent:
            ws.send(frame)
        answers = []
        try:
            while len(answers) < len(sent):
                message = json.loads(ws.recv(timeout=30))
                if message["type"] in ("pong", "error"):
                    answers.append(message)
        except ConnectionClosed:
            pytest.fail(f"closed with {ws.close_code} after {answers}")
        for frame, answer in zip(sent, answers):
            if frame == '{"type": "ping"}':
                assert answer == {"type": "pong"}
            else:
                assert answer["type"] == "error" and answer["error"]["code"] == "invalid_message", (frame[:80], answer)


def test_no_slot_is_left_behind(running):
    """Run after the property: every socket it opened has given its slot back."""
    url, options = running

    def all_slots_free() -> bool:
        sockets = [connect(url, **options) for _ in range(SLOTS)]
        try:
            return all(json.loads(ws.recv(timeout=30))["type"] != "error" for ws in sockets)
        finally:
            for ws in sockets:
                ws.close()

    eventually_sync(all_slots_free, what=f"the user's {SLOTS} stream slots to be free")
