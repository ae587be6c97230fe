"""Regressions of issue 27 outside login and Durable Streams, each named after what broke, on every backend."""

import base64
import json
import socket

import httpx
import pytest

from chat.server.logs import LogUnhandled
from tests.support.api import issue_token
from tests.support.operator import operator_client
from tests.support.server import LiveServer


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, start_server):
    return start_server(request.param)


def cursor_of(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


async def test_crafted_conversations_cursor_is_a_400(server):
    """A cursor ["c", "9999-12-31T23:59:59-14:00", 1] on GET /api/conversations was a 500 (OverflowError) on SQLite."""
    token = await issue_token(server.url, "alice")
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        for moment in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2025-01-01T00:00:00"):
            response = await http.get("/api/conversations", params={"cursor": cursor_of("c", moment, 1)})
            assert response.status_code == 400, (moment, response.text)
            assert response.json()["error"] == {
                "code": "invalid_cursor", "message": response.json()["error"]["message"], "field": "cursor"
            }
        ok = await http.get("/api/conversations", params={"cursor": cursor_of("c", "9999-12-31T23:59:59+00:00", 1)})
        assert ok.status_code == 200


async def test_admin_nul_in_a_filter_is_a_400(server):
    """`?status__exact=%00` in the admin was a 500 on PostgreSQL, which refuses NUL in a string."""
    operator = await operator_client(server)
    for query in ("status__exact=%00", "q=a%00b", "provider=x%00"):
        response = await operator.http.get(f"/admin/chat/generation/?{query}")
        assert response.status_code == 400, (query, response.status_code)
    assert (await operator.http.get("/admin/auth/user/?q=%00")).status_code == 400
    assert (await operator.http.get("/admin/chat/generation/?status__exact=complete")).status_code == 200


@pytest.fixture(scope="module")
def uvicorn(database_templates, tmp_path_factory):
    """uvicorn, which hands a body to the app as it arrives (Daphne reads it whole first), with a 2,000-byte limit."""
    server = LiveServer(
        database_url=database_templates.fresh("sqlite"), env={"CHAT_MAX_BODY_BYTES": "2000"},
        workdir=tmp_path_factory.mktemp("uvicorn"), server="uvicorn",
    ).start()
    yield server
    server.stop()


def status_line(sock: socket.socket) -> bytes:
    return sock.makefile("rb").readline()


@pytest.mark.parametrize("path", ["/api/auth/token", "/ds/v1/stream/big", "/accounts/login/"])
def test_body_over_the_limit_is_refused_before_it_is_read(uvicorn, path):
    """Bodies were read in full before the 413: a declared Content-Length over the limit is refused before a byte of it is sent."""
    with socket.create_connection(("127.0.0.1", uvicorn.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode()
        )
        assert status_line(sock).startswith(b"HTTP/1.1 413 "), "answered with no body sent"


def test_chunked_body_is_refused_at_the_limit(uvicorn):
    """A body without a length was read to its end before the 413: reading now stops at the limit."""
    with socket.create_connection(("127.0.0.1", uvicorn.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 1000
        for _ in range(3):  # 3,000 bytes, then the body never ends.
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        assert status_line(sock).startswith(b"HTTP/1.1 413 ")


async def test_errors_escaping_django_are_logged_with_method_and_path(caplog):
    """An error outside a view (a WebSocket consumer, a streaming body) left no line saying which request it was."""

    async def failing_app(scope, receive, send):
        raise RuntimeError("boom")

    scope = {"type": "websocket", "path": "/ws/generations/x/", "query_string": b"access_token=chat_secret"}
    with pytest.raises(RuntimeError):
        await LogUnhandled(failing_app)(scope, None, None)
    assert "unhandled error in WEBSOCKET /ws/generations/x/" in caplog.text
    assert "RuntimeError: boom" in caplog.text and "chat_secret" not in caplog.text
