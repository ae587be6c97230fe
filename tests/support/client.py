"""An API client for the tests: logs in like a browser and reads SSE with httpx-sse."""

import asyncio
import json
import uuid
from dataclasses import dataclass

import httpx
from httpx_sse import aconnect_sse

from tests.support.server import USERS, query
from tests.support.wait import eventually

TERMINAL_EVENTS = {"done", "interrupted", "failed", "cancelled"}
ENDED = {"complete", "interrupted", "failed", "cancelled"}


def shown_parts(events) -> tuple[str, str]:
    """The text and reasoning a client shows: each part's tokens appended, a `snapshot` replacing both."""
    text = reasoning = ""
    for event in events:
        if event.event == "snapshot":
            data = json.loads(event.data)
            text, reasoning = data["text"], data.get("reasoning", "")
        elif event.event == "token":
            text += json.loads(event.data)["text"]
        elif event.event == "reasoning":
            reasoning += json.loads(event.data)["text"]
    return text, reasoning


def shown_text(events) -> str:
    """The text a client shows: tokens appended, a `snapshot` replacing everything before it."""
    return shown_parts(events)[0]


def assert_ids_increase(ids: list[int], *, last: int, after: int = 0) -> None:
    """What the protocol promises of token ids: past the resume point, only forward, up to the last token.

    Not one event per token: a client that connects late gets stored chunks,
    and a coalescing window merges tokens, so an event may cover several.
    """
    assert ids, "no token event"
    assert ids == sorted(set(ids)), f"an event id repeated or went back: {ids}"
    assert ids[0] > after, f"an event at or before the resume point {after}: {ids}"
    assert ids[-1] == last, f"the last token event is {ids[-1]}, not the stored last seq {last}"


@dataclass
class StreamRead:
    events: list  # httpx_sse.ServerSentEvent, keepalive comments excluded
    status_code: int

    @property
    def tokens(self) -> list:
        return [e for e in self.events if e.event == "token"]

    @property
    def text(self) -> str:
        return "".join(json.loads(e.data)["text"] for e in self.tokens)

    @property
    def answer(self) -> str:
        return shown_text(self.events)

    @property
    def reasoning(self) -> str:
        return "".join(json.loads(e.data)["text"] for e in self.events if e.event == "reasoning")

    @property
    def part_seqs(self) -> list[int]:
        """The `seq` of each token and reasoning event, in order: one sequence space across parts."""
        events = [e for e in self.events if e.event in ("token", "reasoning")]
        seqs = [json.loads(e.data)["seq"] for e in events]
        assert [e.id for e in events] == [str(s) for s in seqs], "a token event's id is its seq"
        return seqs

    @property
    def seqs(self) -> list[int]:
        """The `seq` of each token event, which is also its id."""
        seqs = [json.loads(e.data)["seq"] for e in self.tokens]
        assert [e.id for e in self.tokens] == [str(s) for s in seqs], "a token event's id is its seq"
        return seqs

    @property
    def terminal(self):
        return next((e for e in self.events if e.event in TERMINAL_EVENTS), None)

    @property
    def last_id(self) -> str | None:
        ids = [e.id for e in self.events if e.id]
        return ids[-1] if ids else None


class ChatClient:
    @staticmethod
    def counts_toward_cut(event) -> bool:
        return event.event in ("token", "reasoning")

    def __init__(self, base_url: str):
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.http.aclose()

    async def login(self, username: str, password: str) -> "ChatClient":
        await self.http.get("/accounts/login/")
        response = await self.http.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.http.cookies["csrftoken"]},
        )
        assert response.status_code == 302, f"login failed for {username}: {response.status_code}"
        return self

    @property
    def csrf(self) -> dict:
        return {"X-CSRFToken": self.http.cookies.get("csrftoken", "")}

    async def post(self, path: str, **kwargs) -> httpx.Response:
        return await self.http.post(path, headers={**self.csrf, **kwargs.pop("headers", {})}, **kwargs)

    async def new_conversation(self, title: str = "test") -> int:
        response = await self.post("/api/conversations", json={"title": title})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def ask(self, content: str, *, conversation_id: int | None = None, **options) -> dict:
        """Post a message to stream; return the created generation."""
        conversation_id = conversation_id or await self.new_conversation()
        response = await self.post(
            f"/api/conversations/{conversation_id}/messages", json={"content": content, "stream": True, **options}
        )
        assert response.status_code == 201, response.text
        return response.json()["generation"]

    async def generation(self, generation_id: str) -> dict:
        response = await self.http.get(f"/api/generations/{generation_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_terminal(self, generation_id: str) -> dict:
        """The generation, once it has ended."""
        return await eventually(
            lambda: self.generation(generation_id),
            until=lambda generation: generation["status"] in ENDED,
            what=f"generation {generation_id} to end",
        )

    async def messages_text(self, generation: dict) -> str:
        """The stored assistant message text, read back through the generation."""
        return (await self.generation(generation["id"]))["text"]

    async def read_stream(
        self,
        generation_id: str,
        *,
        last_event_id: str | None = None,
        max_events: int | None = None,
        params=None,
        first_event: asyncio.Event | None = None,
    ) -> StreamRead:
        """Read events until the terminal one, or cut the connection after `max_events` counted events.

        `first_event` is set once an event has arrived: the stream is open and following.
        """
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
                    continue  # httpx-sse reports the bare `retry:` hint as an empty event.
                events.append(event)
                if first_event is not None:
                    first_event.set()
                if event.event in TERMINAL_EVENTS:
                    break
                if max_events is not None and sum(self.counts_toward_cut(e) for e in events) >= max_events:
                    break
        return StreamRead(events, 200)

    async def follow_with_cuts(
        self, generation_id: str, cut_every: int, *, last_id: str | None = None
    ) -> tuple[list, str]:
        """Follow to the end (after `last_id` if given), dropping the connection every `cut_every` token
        or reasoning events and resuming."""
        events = []
        for _ in range(10_000):
            read = await self.read_stream(generation_id, last_event_id=last_id, max_events=cut_every)
            assert read.status_code == 200
            events += read.events
            last_id = read.last_id or last_id
            if read.terminal:
                return events, last_id
        raise AssertionError("stream never ended")


async def logged_in(server, name: str = "alice") -> ChatClient:
    """A browser session of one of the test users; use it as `async with`."""
    return await ChatClient(server.url).login(name, USERS[name])


async def connection_rows(server, generation_id: str, count: int) -> list[dict]:
    """The StreamConnection rows the server wrote for a generation, once `count` of them have ended."""
    sql = (
        "SELECT transport, end_reason, events_sent, tokens_sent, resumed_from FROM chat_streamconnection "
        "WHERE generation_id = %s AND ended_at IS NOT NULL ORDER BY id"
    )
    return await eventually(
        lambda: query(server.database_url, sql, uuid.UUID(generation_id)),
        until=lambda rows: len(rows) >= count,
        what=f"{count} ended connections of generation {generation_id}",
    )
