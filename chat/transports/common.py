"""What every transport shares: the resume position, the coalescing window, the connection log."""

import asyncio
import re

from django.conf import settings
from django.utils import timezone

from ..db import db_work
from ..errors import ApiError
from ..models import Generation, StreamConnection
from ..streaming import registry
from ..streaming.events import End, Token

# ASCII digits only: str.isdigit() also takes '²' and Arabic-Indic digits, which int() refuses or reads.
DIGITS = re.compile(r"[0-9]{1,10}")
# Sequence numbers are stored as 32-bit integers on every database backend.
MAX_EVENT_ID = 2**31 - 1


def parse_last_event_id(request, generation: Generation) -> int:
    """The client's position: the `Last-Event-ID` header, else `?last_event_id=`, else the start."""
    raw = request.headers.get("Last-Event-ID")
    if raw is not None:
        return resume_position(raw, generation, field="Last-Event-ID")
    return resume_position(request.GET.get("last_event_id"), generation, field="last_event_id")


def resume_position(raw: str | None, generation: Generation, *, field: str) -> int:
    """Validate a client's last event id (any transport); none means the generation's start."""
    if raw is None or raw.strip() == "":
        return generation.first_seq - 1
    raw = raw.strip()
    if not DIGITS.fullmatch(raw) or int(raw) > MAX_EVENT_ID:
        raise ApiError(400, "invalid_last_event_id", f"{field} must be a non-negative integer, got {raw[:40]!r}.", field)
    # Past the stored end is not an error: a client can hold tokens that a killed
    # server never persisted. Following from there ends with a snapshot of the stored text.
    last_event_id = int(raw)
    return last_event_id


def parse_coalesce_s(raw: str | None) -> float:
    """The client's coalescing window (`coalesce_ms`, any transport), in seconds."""
    if raw is None:
        return settings.CHAT_STREAM_COALESCE_MS / 1000
    limit = settings.CHAT_STREAM_COALESCE_MAX_MS
    if not DIGITS.fullmatch(raw) or int(raw) > limit:
        raise ApiError(400, "invalid_coalesce_ms", f"coalesce_ms must be an integer from 0 to {limit}.", "coalesce_ms")
    return int(raw) / 1000


class ConnectionLog:
    """One `StreamConnection` row, whatever the transport: opened on connect, tallied, closed."""

    def __init__(self, connection_id: int):
        self.connection_id = connection_id
        self.events_sent = self.tokens_sent = 0
        self.end_reason = StreamConnection.EndReason.ERROR

    @classmethod
    async def open(
        cls, *, generation: Generation, user, transport: str, after_seq: int, client_addr: str, user_agent: str
    ) -> "ConnectionLog":
        connection = await StreamConnection.objects.acreate(
            generation=generation,
            user=user,
            transport=transport,
            resumed_from=after_seq if after_seq >= generation.first_seq else None,
            client_addr=client_addr[:64],
            user_agent=user_agent[:256],
        )
        return cls(connection.pk)

    def sent(self, events: list) -> None:
        for event in events:
            if isinstance(event, Token):
                self.events_sent += 1
                self.tokens_sent += event.last_seq - event.first_seq + 1
            elif isinstance(event, End):
                self.events_sent += 1

    def client_gone(self) -> None:
        """The transport was torn down before the end: by the client, or by our shutdown."""
        self.end_reason = (
            StreamConnection.EndReason.SERVER_SHUTDOWN if registry.shutting_down else StreamConnection.EndReason.CLIENT_GONE
        )

    async def close(self) -> None:
        # Shielded: the client's disconnect may cancel us again while this is saved.
        await asyncio.shield(self.save_end())

    async def save_end(self) -> None:
        await db_work(StreamConnection.objects.filter(pk=self.connection_id).update)(
            events_sent=self.events_sent, tokens_sent=self.tokens_sent, ended_at=timezone.now(), end_reason=self.end_reason
        )
