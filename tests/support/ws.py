"""A WebSocket reader for the tests: the `websockets` client against a real server socket."""

import asyncio
import json
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.client import ChatClient

TERMINAL = {"done", "interrupted", "failed", "cancelled"}


@dataclass
class WsRead:
    frames: list = field(default_factory=list)
    close_code: int | None = None
    subprotocol: str | None = None

    @property
    def tokens(self) -> list:
        return [f for f in self.frames if f["type"] == "token"]

    @property
    def text(self) -> str:
        return "".join(f["text"] for f in self.tokens)

    @property
    def terminal(self) -> dict | None:
        return next((f for f in self.frames if f["type"] in TERMINAL), None)

    @property
    def error(self) -> dict | None:
        return next((f["error"] for f in self.frames if f["type"] == "error"), None)

    @property
    def last_id(self) -> int | None:
        ids = [f["id"] for f in self.frames if "id" in f]
        return ids[-1] if ids else None


def ws_url(server, generation_id: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"ws://127.0.0.1:{server.port}/ws/generations/{generation_id}/" + (f"?{query}" if query else "")


def session_headers(client: ChatClient | None) -> dict:
    if client is None:
        return {}
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())}


async def read_ws(
    server, generation_id: str, client: ChatClient | None, *, max_tokens=None, send=None, subprotocols=None, **params
) -> WsRead:
    """Read frames until the server closes, or close after `max_tokens` token frames.

    `send` is a frame to send once the first token frame has arrived.
    """
    read = WsRead()
    async with connect(
        ws_url(server, generation_id, **params),
        origin=server.url,
        additional_headers=session_headers(client),
        subprotocols=subprotocols,
        open_timeout=30,
    ) as socket:
        read.subprotocol = socket.subprotocol
        try:
            async with asyncio.timeout(60):
                while True:
                    frame = json.loads(await socket.recv())
                    read.frames.append(frame)
                    if send and frame["type"] == "token" and len(read.tokens) == 1:
                        await socket.send(json.dumps(send))
                    if max_tokens is not None and len(read.tokens) >= max_tokens:
                        break
        except ConnectionClosed:
            pass
        if max_tokens is None or read.terminal or read.error:
            await socket.wait_closed()
            read.close_code = socket.close_code
    return read
