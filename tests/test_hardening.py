"""Regressions of issue 27 outside login and Durable Streams, each named after what broke, on every backend."""

import base64
import json

import httpx
import pytest

from tests.support.api import issue_token
from tests.support.operator import operator_client


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
