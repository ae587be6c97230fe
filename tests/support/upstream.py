"""What the local LLM upstreams share: a real HTTP/1.1 server on 127.0.0.1 that records each request.

Each upstream (openai_upstream.py, anthropic_upstream.py) writes its API's
wire format in `_respond`; this module reads the request, notices a client
that goes away, and lets a test wait until every connection is closed.
"""

import asyncio
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

from tests.support.loopback import LoopbackServer

# A prompt containing `[upstream:<scenario>]` picks the scenario for that request.
SCENARIO_DIRECTIVE = re.compile(r"\[upstream:(\w+)\]")


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens that join back to exactly the text."""
    return re.findall(r"\s*\S+", text)


def echo_reply(prompt: str) -> str:
    """The answer an "ok" scenario streams for a prompt."""
    return " ".join(["Echo:", *prompt.split()])


def json_reply(prompt: str) -> str:
    """The JSON object a "json" scenario streams for a prompt."""
    return json.dumps({"echo": " ".join(prompt.split()), "word_count": len(prompt.split())})


def reasoning_reply(prompt: str) -> str:
    """The reasoning streamed before the answer to a prompt."""
    return f"The user wrote {len(prompt.split())} words; I will echo them back."


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict | None
    # True when the client went away before the response was complete.
    client_gone: bool = False

    @property
    def prompt(self) -> str:
        """The last user message's content."""
        user = [m for m in (self.body or {}).get("messages", []) if m.get("role") == "user"]
        return str(user[-1].get("content", "")) if user else ""


@dataclass
class StreamingUpstream(LoopbackServer):
    """A server whose subclass answers each request in `_respond`; `start()`/`stop()` or use `with`."""

    port: int = 0
    # With chunked framing a cut is an HTTP-level error; without, the body just ends.
    chunked: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    # While `holding`, every answer waits before its token of this index (reasoning and text counted alike).
    hold_at: int | None = None

    def __post_init__(self) -> None:
        self._handlers: set[asyncio.Task] = set()
        self._idle = threading.Condition()
        self._released = asyncio.Event()

    @contextmanager
    def holding(self, at: int):
        """Hold every answer before its token `at` until `release()` or the block's end.

        A test then knows how far an answer has gone (a stream cut before the
        release ends at or before token `at`), without guessing a time.
        """
        self._released = asyncio.Event()
        self.hold_at = at
        try:
            yield self
        finally:
            self.hold_at = None
            self.release()

    def release(self) -> None:
        """Let held answers go on."""
        self._loop.call_soon_threadsafe(self._released.set)

    async def before_token(self, index: int) -> None:
        """Wait here while the test holds answers at this token (see `holding`)."""
        if self.hold_at is not None and index >= self.hold_at:
            await self._released.wait()

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no connection is open; blocking, so await it via `asyncio.to_thread`."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._handlers, timeout)

    async def _close_connections(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._idle:
            self._handlers.add(asyncio.current_task())
        try:
            request = await read_request(reader)
            self.requests.append(request)
            respond = asyncio.ensure_future(self._respond(request, writer))
            # The request is fully read, so anything further on the socket means the client left.
            gone = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({respond, gone}, return_when=asyncio.FIRST_COMPLETED)
            error = respond.exception() if respond.done() else None
            request.client_gone = not respond.done() or error is not None
            for task in (respond, gone):
                task.cancel()
            await asyncio.gather(respond, gone, return_exceptions=True)
            if error is not None and not isinstance(error, ConnectionError):
                raise error
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that hangs up or sends junk just loses its connection
        finally:
            writer.close()
            with self._idle:
                self._handlers.discard(asyncio.current_task())
                self._idle.notify_all()

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start_event_stream(self, writer: asyncio.StreamWriter, headers: str = "") -> None:
        """Send a 200 `text/event-stream` head; `headers` are extra `Name: value\\r\\n` lines."""
        framing = "Transfer-Encoding: chunked\r\n" if self.chunked else ""
        writer.write(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            f"Cache-Control: no-cache\r\nConnection: close\r\n{headers}{framing}\r\n".encode()
        )
        await writer.drain()

    async def send(self, writer: asyncio.StreamWriter, text: str) -> None:
        """Send part of an event stream's body, in a chunk of its own when chunked."""
        data = text.encode()
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        await writer.drain()

    async def end_event_stream(self, writer: asyncio.StreamWriter) -> None:
        if self.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()


async def read_request(reader: asyncio.StreamReader) -> RecordedRequest:
    method, path, _version = (await reader.readline()).decode("latin-1").split()
    headers = {}
    while line := (await reader.readline()).decode("latin-1").strip():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", 0)))
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return RecordedRequest(method, path, headers, body if isinstance(body, dict) else None)


async def send_json(writer: asyncio.StreamWriter, status: int, body: dict, headers: str = "") -> None:
    """Send a whole JSON response; `headers` are extra `Name: value\\r\\n` lines."""
    data = json.dumps(body).encode()
    # 529 is Anthropic's own "overloaded", which http.HTTPStatus does not know.
    reason = "Overloaded" if status == 529 else HTTPStatus(status).phrase
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    await writer.drain()
