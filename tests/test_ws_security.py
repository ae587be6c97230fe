"""WebSocket hardening: unknown paths answer with the error frame, and the origin check compares scheme, host and port."""

import asyncio
import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.api import issue_token
from tests.support.wait import eventually_sync


def open_ws(server, path: str, **options) -> tuple[list, int | None]:
    """Connect, read every frame until the close; return the frames and the close code."""
    frames = []
    with connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=30, **options) as ws:
        try:
            for message in ws:
                frames.append(json.loads(message))
        except ConnectionClosed:
            pass
        return frames, ws.close_code


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("sqlite", CSRF_TRUSTED_ORIGINS="https://app.example.com")


@pytest.fixture(scope="module")
def token(server):
    return asyncio.run(issue_token(server.url, "alice"))


@pytest.fixture(scope="module")
def generation_id(server, token):
    bearer = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{server.url}/api/conversations", json={"title": "ws"}, headers=bearer).json()
    answer = httpx.post(
        f"{server.url}/api/conversations/{conversation['id']}/messages",
        json={"content": "Hello", "stream": False},
        headers=bearer,
        timeout=60,
    ).json()
    return answer["generation"]["id"]


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/generations/not-a-uuid/", "/ws/generations/", "/ws/"])
def test_unknown_paths_get_the_error_frame(server, token, path):
    before = server.log().count("Traceback")
    frames, code = open_ws(server, path, origin=server.url, subprotocols=["llm-stream.v1", f"bearer.{token}"])
    assert code == 4404
    assert frames == [{"type": "error", "error": {"code": "not_found", "message": "No WebSocket route here.", "field": None}}]
    assert server.log().count("Traceback") == before


def test_own_origin_is_accepted(server, token, generation_id):
    frames, code = open_ws(server, f"/ws/generations/{generation_id}/", origin=server.url, subprotocols=[f"bearer.{token}"])
    assert code == 1000 and frames[-1]["type"] == "done"


def test_a_trusted_origin_is_accepted(server, token, generation_id):
    frames, code = open_ws(
        server, f"/ws/generations/{generation_id}/", origin="https://app.example.com", subprotocols=[f"bearer.{token}"]
    )
    assert code == 1000


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # same host, another port: the audit's finding
        "https://127.0.0.1:{port}",  # another scheme
        "http://localhost.evil.example:{port}",
        "http://app.example.com",  # a trusted host with the wrong scheme
        "null",
    ],
)
def test_other_origins_are_refused(server, token, generation_id, origin):
    with pytest.raises(InvalidStatus) as refused:
        open_ws(
            server,
            f"/ws/generations/{generation_id}/",
            origin=origin.format(port=server.port),
            subprotocols=[f"bearer.{token}"],
        )
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("how", ["subprotocol", "query", "header"])
def test_a_native_app_with_a_bearer_token_needs_no_origin(server, token, generation_id, how):
    path = f"/ws/generations/{generation_id}/"
    options = {
        "subprotocol": {"subprotocols": [f"bearer.{token}"]},
        "query": {},
        "header": {"additional_headers": {"Authorization": f"Bearer {token}"}},
    }[how]
    if how == "query":
        path += f"?access_token={token}"
    frames, code = open_ws(server, path, **options)
    assert code == 1000 and frames[-1]["type"] == "done"


def test_no_origin_and_no_token_is_refused(server, generation_id):
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, f"/ws/generations/{generation_id}/")
    assert refused.value.response.status_code == 403


def test_no_origin_and_a_bad_token_gets_the_401_frame(server, generation_id):
    frames, code = open_ws(server, f"/ws/generations/{generation_id}/", subprotocols=["bearer.nope"])
    assert code == 4401 and frames[-1]["error"]["code"] == "invalid_token"


def test_deeply_nested_frame_releases_the_stream_slot(start_server):
    """A text frame nested 100,000 deep made `receive` raise, `disconnect` never ran, and the user's stream slot was lost."""
    server = start_server("sqlite", fresh=True, CHAT_MAX_STREAMS_PER_USER="2", CHAT_SIMULATED_TOKENS_PER_S="2")
    token = asyncio.run(issue_token(server.url, "alice"))
    bearer = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{server.url}/api/conversations", json={"title": "slots"}, headers=bearer).json()
    running = httpx.post(
        f"{server.url}/api/conversations/{conversation['id']}/messages", json={"content": "Hi", "stream": True}, headers=bearer
    ).json()["generation"]["id"]
    url = f"ws://127.0.0.1:{server.port}/ws/generations/{running}/"
    options = {"subprotocols": ["llm-stream.v1", f"bearer.{token}"], "origin": server.url, "open_timeout": 30}

    for _ in range(2):
        with connect(url, **options) as ws:
            ws.send("[" * 100_000 + "]" * 100_000)
            frames = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
            assert any(f.get("type") == "error" and f["error"]["code"] == "invalid_message" for f in frames), frames

    def both_slots_free() -> bool:
        with connect(url, **options) as first, connect(url, **options) as second:
            return all(json.loads(ws.recv(timeout=30))["type"] != "error" for ws in (first, second))

    eventually_sync(both_slots_free, what="the user's two stream slots to be free again")
    httpx.post(f"{server.url}/api/generations/{running}/cancel", headers=bearer)
