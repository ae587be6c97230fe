"""Bearer-token API clients for the tests: what a mobile app does, over a real socket."""

import json
from contextlib import asynccontextmanager

import httpx

from tests.support.client import ChatClient
from tests.support.server import USERS


async def issue_token(base_url: str, username: str, **extra) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post("/api/auth/token", json={"username": username, "password": USERS[username], **extra})
    assert response.status_code == 201, response.text
    return response.json()["token"]


class ApiClient(ChatClient):
    """httpx with `Authorization: Bearer`; no cookies, no CSRF token."""

    @staticmethod
    def counts_toward_cut(event) -> bool:
        return True  # Any event, so json tests can cut between a token and its json event.

    def __init__(self, base_url: str, token: str):
        self.token = token
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(60.0), headers={"Authorization": f"Bearer {token}"}
        )

    async def aclose(self):
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return await self.http.request(method, path, **kwargs)

    async def new_conversation(self, title: str = "test") -> dict:
        response = await self.http.post("/api/conversations", json={"title": title})
        assert response.status_code == 201, response.text
        return response.json()

    async def post_message(self, conversation_id: int, content: str, *, key: str | None = None, **body) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return await self.http.post(
            f"/api/conversations/{conversation_id}/messages", json={"content": content, **body}, headers=headers
        )

    async def ask(self, content: str, *, conversation_id: int | None = None, **body) -> dict:
        """Post a message to stream; return the whole answer body."""
        conversation_id = conversation_id or (await self.new_conversation())["id"]
        response = await self.post_message(conversation_id, content, stream=True, **body)
        assert response.status_code == 201, response.text
        return response.json()


@asynccontextmanager
async def api_client(base_url: str, username: str):
    client = ApiClient(base_url, await issue_token(base_url, username))
    try:
        yield client
    finally:
        await client.aclose()


def json_events(events) -> list[tuple[str, dict]]:
    """The (id, payload) of each `json` event."""
    return [(e.id, json.loads(e.data)) for e in events if e.event == "json"]


def error_of(response: httpx.Response, status: int) -> dict:
    """The `error` of a response in the API's one error shape, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"], body
    return body["error"]
