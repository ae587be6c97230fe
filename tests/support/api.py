"""Bearer-token API clients for the tests: what a mobile app does, over a real socket."""

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
from httpx_sse import aconnect_sse

from tests.support.client import TERMINAL_EVENTS, StreamRead
from tests.support.server import USERS


async def issue_token(base_url: str, username: str, **extra) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post("/api/auth/token", json={"username": username, "password": USERS[username], **extra})
    assert response.status_code == 201, response.text
    return response.json()["token"]


class ApiClient:
    """httpx with `Authorization: Bearer`; no cookies, no CSRF token."""

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

    async def generation(self, generation_id: str) -> dict:
        response = await self.http.get(f"/api/generations/{generation_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_terminal(self, generation_id: str, timeout: float = 30.0) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            generation = await self.generation(generation_id)
            if generation["status"] not in ("queued", "streaming"):
                return generation
            await asyncio.sleep(0.05)
        raise AssertionError(f"generation {generation_id} did not end within {timeout} s")

    async def read_stream(
        self, generation_id: str, *, last_event_id: str | None = None, max_events: int | None = None, params=None
    ) -> StreamRead:
        """Read SSE events until the terminal one, or cut after `max_events` events of any kind."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        events = []
        async with aconnect_sse(
            self.http, "GET", f"/api/generations/{generation_id}/stream", headers=headers, params=params
        ) as source:
            if source.response.status_code != 200:
                await source.response.aread()
                return StreamRead([], source.response.status_code)
            async for event in source.aiter_sse():
                if event.event == "message" and not event.data:
                    continue
                events.append(event)
                if event.event in TERMINAL_EVENTS:
                    break
                if max_events is not None and len(events) >= max_events:
                    break
        return StreamRead(events, 200)


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
