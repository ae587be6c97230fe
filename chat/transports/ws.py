"""The WebSocket transport: the SSE protocol as JSON frames, plus cancel from the client.

`ws://host/ws/generations/<uuid>/?last_event_id=N[&coalesce_ms=M]` follows a
generation with the same `Follow` (replay, then tail) as the SSE view; only the
encoding differs (`event.ws`). Frames from the server:

    {"type": "token", "id": 7, "seq": 7, "text": "..."}          (also "snapshot")
    {"type": "done" | "interrupted" | "failed" | "cancelled", "id": N, "seq": N, ...}
    {"type": "ping"}                                              (every CHAT_STREAM_KEEPALIVE_S of silence)
    {"type": "error", "error": {"code", "message", "field"}}      (then a 44xx close)

Frames from the client: `{"type": "cancel"}` cancels the generation, and
`{"type": "ping"}` is answered with `{"type": "pong"}`.

The socket is always accepted and then closed with a code, rather than refused
during the handshake: a browser reports a refused handshake only as code 1006
with no reason, and Daphne drops close reasons, so the `error` frame before
the close is how a client learns what went wrong. Close codes are in CLOSE_CODES
and ERROR_CLOSE_CODES; docs/transports.md lists them.
"""

import asyncio
import json
import logging
from contextlib import aclosing
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from .. import actions
from ..errors import ApiError, error_body
from ..models import Generation, StreamConnection
from ..server.admission import get_admission
from ..streaming.events import KEEPALIVE, End, dumps
from ..streaming.follow import Follow
from .common import ConnectionLog, parse_coalesce_s, resume_position

logger = logging.getLogger(__name__)

# One close code per terminal state; 1000 only for a complete answer, so a
# client can tell "finished" from "stopped" without parsing the last frame.
CLOSE_CODES = {
    Generation.Status.COMPLETE: 1000,
    Generation.Status.INTERRUPTED: 4000,
    Generation.Status.FAILED: 4001,
    Generation.Status.CANCELLED: 4002,
}
# Errors mirror the HTTP statuses the SSE endpoint answers with, plus 4000.
ERROR_CLOSE_CODES = {400: 4400, 401: 4401, 404: 4404, 429: 4429, 503: 4503}
INTERNAL_ERROR_CLOSE = 1011

PING = dumps({"type": "ping"})
PONG = dumps({"type": "pong"})


def query_param(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin1"), keep_blank_values=True).get(name)
    return values[-1] if values else None


class GenerationConsumer(AsyncWebsocketConsumer):
    """Follow one generation over a WebSocket until its terminal event."""

    # Followers read the hub, not a channel of their own: no layer channel (and no Redis
    # connection waiting on it) per socket.
    channel_layer_alias = None
    generation: Generation | None = None
    follower: asyncio.Task | None = None
    canceller: asyncio.Task | None = None
    log: ConnectionLog | None = None
    slot: str | None = None

    async def connect(self):
        # Echo the subprotocol the client offered (a browser fails the socket otherwise).
        await self.accept(subprotocol=self.scope.get("subprotocol"))
        try:
            self.generation, after_seq, coalesce_s = await self.parse()
            self.slot = await get_admission().open_stream(self.scope["user"].pk)
        except ApiError as error:
            frame = {"type": "error", **error_body(error.code, error.message, error.field)}
            if error.retry_after is not None:
                frame["retry_after"] = error.retry_after
            await self.send(text_data=dumps(frame))
            await self.close(code=ERROR_CLOSE_CODES.get(error.status, 4400))
            return
        self.log = await ConnectionLog.open(
            generation=self.generation,
            user=self.scope["user"],
            transport=StreamConnection.Transport.WS,
            after_seq=after_seq,
            client_addr=(self.scope.get("client") or ("",))[0] or "",
            user_agent=dict(self.scope.get("headers", ())).get(b"user-agent", b"").decode("latin1"),
        )
        follow = Follow(
            self.generation.id,
            after_seq=after_seq,
            coalesce_s=coalesce_s,
            response_format=self.generation.response_format,
            active_when_read=not self.generation.is_terminal,
        )
        self.follower = asyncio.get_running_loop().create_task(self.follow(follow))

    async def parse(self) -> tuple[Generation, int, float]:
        """Authenticate, find the user's generation, and read the resume position; raise ApiError."""
        if error := self.scope.get("auth_error"):
            raise ApiError(401, "invalid_token", error)
        user = self.scope["user"]
        if not user.is_authenticated:
            raise ApiError(401, "unauthenticated", "Log in or send a bearer token.")
        generation_id = self.scope["url_route"]["kwargs"]["generation_id"]
        generation = await Generation.objects.owned_by(user).filter(pk=generation_id).afirst()
        if generation is None:
            raise ApiError(404, "not_found", "No such generation.")
        after_seq = resume_position(query_param(self.scope, "last_event_id"), generation, field="last_event_id")
        return generation, after_seq, parse_coalesce_s(query_param(self.scope, "coalesce_ms"))

    async def follow(self, follow: Follow) -> None:
        log = self.log
        close_code = INTERNAL_ERROR_CLOSE
        try:
            async with aclosing(follow.batches()) as batches:
                async for batch in batches:
                    for event in batch:
                        await self.send(text_data=PING if event is KEEPALIVE else event.ws)
                        if isinstance(event, End):
                            close_code = CLOSE_CODES[event.status]
                    log.sent(batch)
            log.end_reason = StreamConnection.EndReason.COMPLETED
        except asyncio.CancelledError:
            log.client_gone()
            raise
        except Exception:
            logger.exception("websocket stream of generation %s failed", follow.generation_id)
        finally:
            await log.close()
        await self.close(code=close_code)

    async def __call__(self, scope, receive, send):
        """Release the stream slot however the connection ends, even when a handler raised and `disconnect` never ran."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            kind = json.loads(text_data or "")["type"]
        except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: a frame nested too deep.
            kind = None
        if kind == "cancel" and self.generation is not None:
            # Not awaited here: cancelling waits for the end, and this consumer
            # must keep handling frames (a disconnect) meanwhile.
            self.canceller = asyncio.get_running_loop().create_task(actions.generation_cancel(generation=self.generation))
        elif kind == "ping":
            await self.send(text_data=PONG)
        else:
            message = 'Send {"type": "cancel"} or {"type": "ping"}.'
            await self.send(text_data=dumps({"type": "error", **error_body("invalid_message", message)}))

    async def disconnect(self, code):
        await self.release()

    async def release(self):
        """Stop following and give the stream slot back; once, whichever way the socket ends."""
        if self.follower and not self.follower.done():
            self.follower.cancel()
            try:
                await self.follower
            except asyncio.CancelledError:
                pass
        slot, self.slot = self.slot, None
        if slot is not None:
            await get_admission().close_stream(slot)
