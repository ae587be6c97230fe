"""Strict input: bad values are a clear 4xx, never a 5xx, on every backend.

Regression tests for the audit's findings (non-ASCII digits, NUL, loose
booleans, two bearer parsers), then property-based tests (hypothesis) of the
headers and query parameters of the SSE stream endpoint, /api/events/, the
WebSocket and the chat page: every Unicode category, non-ASCII digits, NUL and
very long values. CHAT_FUZZ_EXAMPLES sets the examples per property (60).
"""

import json
import socket
import uuid

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from tests.support.fuzz import (
    FUZZ,
    LINE_LIMIT,
    NON_ASCII_DIGITS,
    assert_clear_answer,
    header_bytes,
    send,
    values,
)
from tests.support.server import USERS


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(request, start_server):
    """A server, alice's bearer token, her browser session, and a finished answer of hers."""
    server = start_server(request.param)
    base = server.url
    token = httpx.post(f"{base}/api/auth/token", json={"username": "alice", "password": USERS["alice"]}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{base}/api/conversations", json={"title": "fuzz"}, headers=bearer).json()
    answer = httpx.post(
        f"{base}/api/conversations/{conversation['id']}/messages",
        json={"content": "Hello", "stream": False},
        headers=bearer,
        timeout=60,
    ).json()
    session = httpx.Client(base_url=base, timeout=30)
    session.get("/accounts/login/")
    session.post(
        "/accounts/login/",
        data={"username": "alice", "password": USERS["alice"], "csrfmiddlewaretoken": session.cookies["csrftoken"]},
    )
    api = httpx.Client(base_url=base, headers=bearer, timeout=30)
    yield {
        "server": server,
        "token": token,
        "api": api,
        "session": session,
        "conversation_id": conversation["id"],
        "generation_id": answer["generation"]["id"],
    }
    api.close()
    session.close()


# --- Regressions -------------------------------------------------------------------------


@pytest.mark.parametrize("value", NON_ASCII_DIGITS + ["\x00", "9" * 5000])
def test_chat_page_conversation_parameter(target, value):
    response = target["session"].get("/", params={"conversation": value})
    assert response.status_code == 200
    assert "That conversation does not exist" in response.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/conversations", {"title": "a\x00b"}, "title"),
        ("/api/conversations/{conversation_id}/messages", {"content": "hi\x00"}, "content"),
        ("/api/auth/token", {"username": "alice\x00", "password": "x"}, "username"),
        ("/api/auth/token", {"username": "alice", "password": USERS["alice"], "name": "phone\x00"}, "name"),
    ],
)
def test_nul_is_refused(target, path, body, field):
    response = target["api"].post(path.format(**target), json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["field"] == field and "NUL" in error["message"]


def test_nul_in_a_rename_is_refused(target):
    response = target["api"].patch(f"/api/conversations/{target['conversation_id']}", json={"title": "x\x00"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "title"


@pytest.mark.parametrize("stream", ["yes", "true", 1, 0, None, "false"])
def test_stream_must_be_a_json_boolean(target, stream):
    messages = f"/api/conversations/{target['conversation_id']}/messages"
    response = target["api"].post(messages, json={"content": "Hello", "stream": stream})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "stream"
    regenerate = target["api"].post(f"/api/generations/{target['generation_id']}/regenerate", json={"stream": stream})
    assert regenerate.status_code == 400 and regenerate.json()["error"]["field"] == "stream"


@pytest.mark.parametrize(
    ("template", "status"),
    [
        ("Bearer {}", 200),
        ("bearer {}", 200),
        ("BEARER {}", 200),
        ("Bearer  {}", 200),  # RFC 7235: one or more spaces
        ("Bearer {}x", 401),
        ("Bearer {} {}", 401),
        ("Bearer", 401),
        ("Bearer é", 401),
    ],
)
def test_one_bearer_parser_for_every_endpoint(target, template, status):
    header = template.format(target["token"], target["token"]).encode("utf-8")
    with httpx.Client(base_url=target["server"].url, timeout=30) as http:
        api = http.get("/api/conversations", headers={"Authorization": header})
        with http.stream("GET", "/api/events/", headers={"Authorization": header}) as events:
            events_status = events.status_code
    assert (api.status_code, events_status) == (status, status), template


def test_nul_in_a_header(target):
    """h11 will not send it, so a raw socket does: the server refuses the request, or the app answers a 4xx."""
    server = target["server"]
    request = (
        f"GET /api/generations/{target['generation_id']}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {target['token']}\r\nLast-Event-ID: 1\x00\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 4"), status_line


def protocols(target) -> list[str]:
    return ["llm-stream.v1", f"bearer.{target['token']}"]


# --- Properties: never a 5xx ------------------------------------------------------------------


@FUZZ
@given(header=values, last_event_id=values, coalesce_ms=values, extra=values)
@example(header="²", last_event_id="", coalesce_ms="", extra="")
@example(header="", last_event_id="١٢", coalesce_ms="", extra="")
@example(header="", last_event_id="", coalesce_ms="²", extra="")
def test_sse_stream_parameters(target, header, last_event_id, coalesce_ms, extra):
    params = {"last_event_id": last_event_id, "coalesce_ms": coalesce_ms, "x": extra}
    url = f"/api/generations/{target['generation_id']}/stream"
    assert_clear_answer(send(target["api"], "GET", url, params=params, headers={"Last-Event-ID": header_bytes(header)}))


@FUZZ
@given(header=values, query=values)
@example(header="²", query="")
@example(header="", query="user-1:١٢")
def test_events_channel_parameters(target, header, query):
    params = {"lastEventId": query}
    assert_clear_answer(send(target["api"], "GET", "/api/events/", params=params, headers={"Last-Event-ID": header_bytes(header)}))


@FUZZ
@given(generation=values, conversation=values)
def test_chat_page_parameters(target, generation, conversation):
    for params in ({"generation": generation}, {"conversation": conversation}):
        response = send(target["session"], "GET", "/", params=params)
        assert_clear_answer(response)
        assert response is None or response.status_code in (200, 400), response.status_code


@FUZZ
@given(last_event_id=values, coalesce_ms=values, access_token=st.one_of(st.none(), values))
@example(last_event_id="²", coalesce_ms="0", access_token=None)
@example(last_event_id="0", coalesce_ms="١٢", access_token=None)
@example(last_event_id="0", coalesce_ms="0", access_token="\x00")
def test_websocket_parameters(target, last_event_id, coalesce_ms, access_token):
    """Never a 5xx handshake nor a 1011 close; a 44xx close comes after an error frame."""
    params = {"last_event_id": last_event_id, "coalesce_ms": coalesce_ms}
    if access_token is not None:
        params["access_token"] = access_token
    query = httpx.QueryParams(params)
    url = f"ws://127.0.0.1:{target['server'].port}/ws/generations/{target['generation_id']}/?{query}"
    frames, code = [], None
    try:
        with connect(url, subprotocols=protocols(target), origin=target["server"].url, open_timeout=30, close_timeout=5) as ws:
            try:
                for message in ws:
                    frames.append(json.loads(message))
            except ConnectionClosed:
                pass
            code = ws.close_code
    except InvalidStatus as refused:
        assert refused.response.status_code < 500, refused.response.status_code
        return
    except InvalidHandshake:
        assert len(url) > LINE_LIMIT, "closed before any answer, yet the request line was within the limit"
        return
    # 1000 for a complete answer, 4xxx for the other ends and errors; never 1011 nor a dropped socket (1006).
    assert code == 1000 or 4000 <= code < 5000, (code, frames)
    if 4400 <= code < 4500:
        assert frames and frames[-1]["type"] == "error", (code, frames)


def test_unknown_generation_websocket(target):
    url = f"ws://127.0.0.1:{target['server'].port}/ws/generations/{uuid.uuid4()}/"
    frames = []
    with connect(url, subprotocols=protocols(target), origin=target["server"].url) as ws:
        try:
            for message in ws:
                frames.append(json.loads(message))
        except ConnectionClosed:
            pass
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "not_found" and ws.close_code == 4404
