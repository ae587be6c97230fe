"""Following one answer to its end, whatever the network does: the browser client's rules, in Python.

One connection at a time (SSE, or the WebSocket route); a failed one is retried with
backoff and full jitter, resuming by the last event id. A connection silent for
`stall_s` (keepalives count) is dead. After `max_failed_attempts` failures in a row
with no event between them, each round tries the stream once more and else reads
the stored answer with one plain request: an ended answer ends there (FALLBACK), a
running one is polled. Only what asking again cannot fix (401, 403, 404, a refused
post) ends in a final ERROR, raised as the typed error. docs/python-client.md.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource

from .errors import ApiError, AttemptFailed, ChatError, StreamFailed, api_error, error_from_response
from .events import End, Event, Json, Posted, Reasoning, Snapshot, State, StateChange, Token, parse, stored_end
from .retry import DEFAULT_BACKOFF_BASE_S, Config, backoff_delay, retry_delay

ENDED = {"complete", "interrupted", "failed", "cancelled"}


class Reconnect(AttemptFailed):
    """The caller asked to drop the connection and reconnect now (the network changed): not a failure."""


@dataclass(frozen=True)
class Answer:
    """Where following an answer ended: the text shown, and how it ended."""

    generation_id: str
    text: str
    reasoning: str
    last_event_id: int | None
    end: End | None
    state: State
    json: object = None


@dataclass(frozen=True)
class PostRequest:
    """The message an `ask` posts, and the idempotency key that every retry of it carries."""

    path: str
    body: dict
    key: str


class AnswerStream:
    """Follows one generation; iterate it (`async for event in stream`) or `await stream.collect()`.

    Events: Posted (after an `ask`), Token, Reasoning, Snapshot, Json, End, and a
    StateChange on every transition, also given to `on_state`. The text so far is
    `stream.text` (tokens appended, a Snapshot replacing it), its position
    `stream.last_event_id`.
    """

    def __init__(
        self,
        client,
        *,
        generation_id: str | None = None,
        post: PostRequest | None = None,
        last_event_id: int | None = None,
        text: str = "",
        reasoning: str = "",
        config: Config,
        transport: str = "sse",
        on_state: Callable[[StateChange], None] | None = None,
    ):
        if transport not in ("sse", "ws"):
            raise ValueError(f"transport is 'sse' or 'ws', not {transport!r}")
        self._client = client
        self.generation_id = generation_id
        self._post = post
        self.idempotency_key = post.key if post else None
        self.last_event_id = last_event_id
        self.text = text
        self.reasoning = reasoning
        self.json = None
        self.posted: Posted | None = None
        self.end: End | None = None
        self.state: State | None = None
        self.config = config
        self.transport = transport
        self.on_state = on_state
        self.attempts = 0  # connections opened (requests made to stream)
        self.duplicates = 0  # tokens received again and ignored: a correct server sends none
        self.failures = 0  # failed attempts in a row
        self._mode = "stream"  # or "recover": streaming kept failing, the stored answer is read
        self._polls = 0
        self._poll_delay = 0.0
        self._retry_hint: float | None = None  # the server's `retry:`, in seconds
        self._last_progress = time.monotonic()
        self._pending: list[StateChange] = []
        self._task: asyncio.Task | None = None
        self._reconnecting = False
        self._wake: asyncio.Event | None = None
        self._events: AsyncIterator[Event] | None = None

    # --- For the caller ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._events is None:
            self._events = self._run()
        return self._events

    async def collect(self) -> Answer:
        """Follow to the end; the answer as it ended."""
        async for _ in self:
            pass
        return self.answer()

    def answer(self) -> Answer:
        return Answer(self.generation_id or "", self.text, self.reasoning, self.last_event_id, self.end, self.state, self.json)

    def reconnect(self) -> None:
        """Drop the connection and reconnect at once, counting no failure: call it when the network changes
        (a phone moving from Wi-Fi to cellular), rather than waiting for the old socket to go silent."""
        if self._task is not None and not self._task.done():
            self._reconnecting = True
            self._task.cancel()
        if self._wake is not None:
            self._wake.set()

    async def cancel(self) -> dict:
        """Stop the generation (`POST .../cancel`); the stream then ends with status `cancelled`."""
        if self.generation_id is None:
            raise ChatError("The message is not posted yet: there is nothing to cancel.")
        return await self._client.cancel(self.generation_id)

    async def aclose(self) -> None:
        """Stop following (not the generation: that is `cancel`)."""
        if self._events is not None:
            await self._events.aclose()

    async def __aenter__(self) -> "AnswerStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # --- The loop -----------------------------------------------------------------

    async def _run(self) -> AsyncIterator[Event]:
        self._wake = asyncio.Event()
        self._transition(State.CONNECTING)
        for change in self._drain():
            yield change
        while True:
            try:
                # Closed with us, so that a caller who stops early also stops the connection at once.
                async with aclosing(self._attempt() if self._mode == "stream" else self._recover()) as rounds:
                    async for event in rounds:
                        yield event
                if self.end is not None:
                    return
                delay = self._poll_delay  # the fallback found the answer still running
            except AttemptFailed as failure:
                delay = self._failed(failure)
                for change in self._drain():
                    yield change
            await self._sleep(delay)

    async def _attempt(self) -> AsyncIterator[Event]:
        """One connection: its events until the end; raises AttemptFailed."""
        queue: asyncio.Queue = asyncio.Queue()
        self._reconnecting = False
        self._task = asyncio.create_task(self._connect(queue))
        try:
            while True:
                kind, value = await queue.get()
                if kind == "open":
                    self._transition(State.STREAMING)
                elif kind == "event":
                    if (shown := self._apply(value)) is not None:
                        yield shown
                elif kind == "closed":
                    raise AttemptFailed("The connection closed before the answer ended.")
                else:
                    raise value
                for change in self._drain():
                    yield change
                if self.end is not None:
                    return
        finally:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _connect(self, queue: asyncio.Queue) -> None:
        """Open one connection and put what it brings in `queue`: open, events, then closed or failed."""

        def deliver(event) -> None:
            if isinstance(event, Posted):
                self.generation_id = str(event.generation["id"])  # at once: a cut right after must resume it
            queue.put_nowait(("event", event))

        self.attempts += 1
        try:
            await self._read(lambda: queue.put_nowait(("open", None)), deliver)
            queue.put_nowait(("closed", None))
        except asyncio.CancelledError:
            if self._reconnecting:
                queue.put_nowait(("failed", Reconnect("Reconnecting: the network changed.")))
            raise
        except AttemptFailed as failure:
            queue.put_nowait(("failed", failure))
        except (httpx.TimeoutException, TimeoutError):
            queue.put_nowait(("failed", AttemptFailed(f"No data for {self.config.stall_s:g} s.")))
        except (httpx.TransportError, OSError) as error:
            queue.put_nowait(("failed", AttemptFailed(f"The connection was lost ({type(error).__name__}).")))
        except (ValueError, KeyError, TypeError) as error:  # a malformed event
            queue.put_nowait(("failed", AttemptFailed(f"The stream was malformed: {error!r}.")))
        except Exception as error:
            # The WebSocket library's errors are failed attempts; anything else is a bug, raised to the caller.
            websocket_error = type(error).__module__.startswith("websockets")
            queue.put_nowait(("failed", self._ws_failure(error) if websocket_error else error))

    async def _recover(self) -> AsyncIterator[Event]:
        """One round of the fallback: the stream once more (the network may be back), else the stored answer."""
        try:
            async with aclosing(self._attempt()) as attempt:
                async for event in attempt:
                    yield event
            return
        except AttemptFailed as probe:
            if not probe.retryable or self._mode == "stream" or isinstance(probe, Reconnect):
                raise  # not fixable, made progress and broke, or asked to reconnect
            if self.state == State.STREAMING:  # connected, then nothing
                self._transition(State.INTERRUPTED, reason=probe.reason, fallback=True)
        generation = await self._read_stored()
        self.failures = 0  # the server answers
        stored_text = generation.get("text") or ""
        stored_reasoning = generation.get("reasoning")
        if generation["status"] in ENDED:
            self.text = stored_text
            self.reasoning = stored_reasoning or ""
            self.last_event_id = generation["last_seq"]
            yield Snapshot(self.last_event_id, self.text, stored_reasoning)
            self.end = stored_end(generation)
            yield self.end
            self._transition(State.FALLBACK, reason=self.end.status, fallback=True)
            for change in self._drain():
                yield change
            return
        if self.state == State.ERROR:
            self._transition(State.INTERRUPTED, reason="The stream cannot be read; the answer is still running.", fallback=True)
        if len(stored_text) > len(self.text):
            self.text, self.reasoning = stored_text, stored_reasoning or self.reasoning
            self.last_event_id = generation["last_seq"]
            yield Snapshot(self.last_event_id, self.text, stored_reasoning)
        for change in self._drain():
            yield change
        poll = self.config.fallback_poll_s
        self._poll_delay = max(poll / 2, backoff_delay(self._polls, poll, self.config.backoff_cap_s))
        self._polls += 1

    def _failed(self, failure: AttemptFailed) -> float:
        """Decide what a failed attempt means and how long to wait; raises what ends the stream."""
        if isinstance(failure, ApiError) and failure.code == "invalid_last_event_id" and self.last_event_id != 0:
            # Our position is past the stored end (the server lost unflushed tokens in a crash): start over
            # from what it has. Id 0 asks for everything, a continuation's earlier text included.
            self.text, self.reasoning, self.last_event_id = "", "", 0
            return 0.0
        # A post refused with a 4xx created nothing; a rate limit there is this user's own: say so.
        refused_post = isinstance(failure, ApiError) and self.generation_id is None and failure.status < 500
        if not failure.retryable or refused_post:
            self._transition(State.ERROR, reason=str(failure), final=True)
            raise failure
        if isinstance(failure, Reconnect):
            self._transition(State.INTERRUPTED, reason=failure.reason, failures=self.failures, retry_in=0.0)
            return 0.0
        self.failures += 1
        limit = self.config.give_up_after_s
        if limit is not None and time.monotonic() - self._last_progress > limit:
            self._transition(State.ERROR, reason=f"No progress for {limit:g} s: {failure.reason}", final=True)
            raise StreamFailed(f"No progress for {limit:g} s; last failure: {failure.reason}") from failure
        base = self.config.backoff_base_s or self._retry_hint or DEFAULT_BACKOFF_BASE_S
        delay = retry_delay(failure, self.failures - 1, base, self.config.backoff_cap_s)
        if self._mode == "stream":
            if self.failures >= self.config.max_failed_attempts:
                if self.generation_id is None:  # the message was never posted: nothing to fall back to
                    self._transition(State.ERROR, reason=str(failure), final=True)
                    raise failure
                failures, self.failures = self.failures, 0
                self._mode, self._polls = "recover", 0
                delay = delay if failure.retry_after else 0.0  # at once, unless the server asked for time
                self._transition(State.INTERRUPTED, reason=failure.reason, failures=failures, fallback=True, retry_in=delay)
                return delay
            self._transition(State.INTERRUPTED, reason=failure.reason, failures=self.failures, retry_in=delay)
            return delay
        if self.failures >= self.config.max_failed_attempts:  # neither the stream nor the stored answer
            self._transition(State.ERROR, reason="The server can't be reached.", failures=self.failures, fallback=True, retry_in=delay)
        return delay

    def _apply(self, event: Event) -> Event | None:
        """Take an event into the answer; the event to show, or None (a token already had, or past the end)."""
        if isinstance(event, Posted):
            self.posted = event
            return event
        if self.end is not None:
            return None
        if isinstance(event, (Token, Reasoning)):
            if self.last_event_id is not None and event.seq <= self.last_event_id:
                self.duplicates += 1
                return None  # already have it: whatever the server does, nothing is shown twice
            if isinstance(event, Token):
                self.text += event.text
            else:
                self.reasoning += event.text
            self.last_event_id = event.seq
            self._progress()
        elif isinstance(event, Snapshot):
            self.text = event.text
            if event.reasoning is not None:
                self.reasoning = event.reasoning
            self.last_event_id = event.seq
            self._progress()
        elif isinstance(event, Json):
            self.json = event.value
        elif isinstance(event, End):
            self.last_event_id = event.seq
            self.end = event
            self._transition(State.ENDED, reason=event.status)
        return event

    def _progress(self) -> None:
        """The stream delivered: the run of failures is broken, and streaming is the way again."""
        self.failures = 0
        self._mode = "stream"
        self._last_progress = time.monotonic()

    def _transition(self, state: State, **detail) -> None:
        if state == self.state and state != State.INTERRUPTED:
            return
        self.state = state
        change = StateChange(state, **detail)
        self._pending.append(change)
        if self.on_state is not None:
            self.on_state(change)

    def _drain(self) -> list[StateChange]:
        pending, self._pending = self._pending, []
        return pending

    async def _sleep(self, seconds: float) -> None:
        """Wait, unless `reconnect()` ends the wait first."""
        if seconds <= 0:
            return
        self._wake.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # --- Transports -------------------------------------------------------------------

    async def _read(self, opened: Callable[[], None], deliver: Callable[[Event], None]) -> None:
        if self.generation_id is None:
            if self.transport == "sse":
                return await self._read_post(opened, deliver)
            deliver(self._client._posted(await self._client.post_message_with_key(self._post)))
        if self.transport == "ws":
            return await self._read_ws(opened, deliver)
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        async with self._client._stream_request("GET", f"/api/generations/{self.generation_id}/stream", headers) as response:
            await self._read_sse(response, opened, deliver)

    async def _read_post(self, opened, deliver) -> None:
        """The POST whose 201 is the answer's stream; if it breaks before `posted`, the same POST as plain
        JSON with the same key says what the first one made (and makes it, if it had not)."""
        headers = {"Accept": "text/event-stream", "Idempotency-Key": self._post.key}
        try:
            async with self._client._stream_request("POST", self._post.path, headers, json=self._post.body) as response:
                await self._read_sse(response, opened, deliver)
        except ApiError:
            raise  # refused: nothing was created
        except Exception:
            if self.generation_id is None:
                deliver(self._client._posted(await self._client.post_message_with_key(self._post)))
            raise

    async def _read_sse(self, response: httpx.Response, opened, deliver) -> None:
        if response.status_code not in (200, 201):
            await response.aread()
            raise error_from_response(response)
        opened()
        async for sse in EventSource(response).aiter_sse():
            if sse.retry is not None:
                self._retry_hint = sse.retry / 1000
            if sse.data and (event := parse(sse.event, json.loads(sse.data))) is not None:
                deliver(event)

    async def _read_ws(self, opened, deliver) -> None:
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import ConnectionClosed
        except ImportError:
            raise AttemptFailed("The WebSocket transport needs the `ws` extra (pip install 'django-llm-stream-client[ws]').", retryable=False) from None
        url = self._client.ws_url(f"/ws/generations/{self.generation_id}/")
        if self.last_event_id is not None:
            url += f"?last_event_id={self.last_event_id}"
        subprotocols = ["llm-stream.v1", f"bearer.{self._client.token}"] if self._client.token else ["llm-stream.v1"]
        stall = self.config.stall_s
        # No client pings: the server's keepalive frames and our stall timer tell a dead socket.
        ws = await connect(url, subprotocols=subprotocols, open_timeout=stall, ping_interval=None, max_size=None)
        try:
            opened()
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), stall)
                except ConnectionClosed:
                    return
                frame = json.loads(message)
                kind = frame.get("type")
                if kind == "error":
                    # The frame says what; the close code that follows (44xx) says the status.
                    with suppress(Exception):
                        await asyncio.wait_for(ws.wait_closed(), stall)
                    code = ws.close_code or 0
                    status = code - 4000 if 4400 <= code < 4600 else 400
                    raise api_error(status, frame.get("error"), float(frame.get("retry_after") or 0))
                if (event := parse(kind, frame)) is not None:
                    deliver(event)
        finally:
            # Past the end, or giving up on this socket: no closing handshake, which on a dead
            # connection (a network switch) would hold the reconnect up for its timeout.
            ws.transport.abort()

    @staticmethod
    def _ws_failure(error: Exception) -> AttemptFailed:
        response = getattr(error, "response", None)  # websockets' InvalidStatus: the handshake was refused
        if response is not None and getattr(response, "status_code", None):
            return api_error(response.status_code, None)
        return AttemptFailed(f"The connection was lost ({type(error).__name__}).")

    async def _read_stored(self) -> dict:
        """GET the generation: its status and stored text (the fallback's one plain request)."""
        try:
            return await self._client._fresh_json("GET", f"/api/generations/{self.generation_id}")
        except ApiError:
            raise
        except (httpx.TransportError, OSError) as error:
            raise AttemptFailed(f"The connection was lost ({type(error).__name__}).") from None
