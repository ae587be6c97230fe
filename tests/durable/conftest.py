import httpx
import pytest

from tests.support.api import issue_token


@pytest.fixture
def ds_server(start_server):
    """One server for the durable tests, on SQLite (the core tests cover PostgreSQL), with a short long-poll."""
    return start_server("sqlite", DURABLE_LONG_POLL_TIMEOUT_S=2)


@pytest.fixture
async def ds_alice(ds_server):
    """Alice with a bearer token, at the server's root."""
    token = await issue_token(ds_server.url, "alice")
    async with httpx.AsyncClient(base_url=ds_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        http.token = token
        yield http


@pytest.fixture
async def ds_bob(ds_server):
    token = await issue_token(ds_server.url, "bob")
    async with httpx.AsyncClient(base_url=ds_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        yield http
