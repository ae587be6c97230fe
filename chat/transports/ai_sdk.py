"""The AI SDK's UI message stream: a generation as `useChat` reads it (docs/ai-sdk.md).

An encoding for transports/sse.py, which follows the generation: each event
becomes the protocol's JSON chunks, one SSE event per chunk, each also with
our `id:` (the last token seq the client holds after it), so that
`Last-Event-ID` resumes exactly. A response is self-contained: one that
resumes inside a part opens the part again before its next delta.
"""

from django.http import StreamingHttpResponse

from ..llm import REASONING, TEXT
from ..models import Generation, StreamConnection
from ..streaming.events import End, Keepalive, Snapshot, Token, dumps
from ..streaming.sse import encode
from .sse import generation_stream_response

# The protocol's own: the SDK checks it to tell a UI message stream from plain text.
HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}

# Our model's finish reasons as the SDK's; any other is "other".
FINISH_REASONS = {"": "stop", "stop": "stop", "length": "length"}
END_FINISH_REASONS = {
    Generation.Status.INTERRUPTED: "interrupted",
    Generation.Status.FAILED: "error",
    Generation.Status.CANCELLED: "other",
}


def chunk(seq: int, payload: dict) -> bytes:
    """One chunk as the protocol frames it (a `data:` line, no event name), with our id."""
    return encode(dumps(payload), id=seq)


def message_metadata(generation_id, status: str) -> dict:
    """What a UIMessage's `metadata` holds: the generation (for stop: its cancel endpoint) and its status."""
    return {"generationId": str(generation_id), "status": status}


class UIMessageStream:
    """The chunks of one response, from the client's position `after_seq` (0: the whole message)."""

    transport = StreamConnection.Transport.AI_SDK
    headers = HEADERS

    def __init__(self, *, message_id, generation_id, after_seq: int):
        self.message_id = str(message_id)
        self.generation_id = generation_id
        self.seq = after_seq
        # The open part: its kind (TEXT, REASONING) and its chunk id.
        self.part: tuple[str, str] | None = None

    def head(self) -> bytes:
        if self.seq > 0:
            # A resume by Last-Event-ID: the client has the message; this only sends the headers.
            return encode(comment="resume")
        metadata = {"generationId": str(self.generation_id)}
        return chunk(0, {"type": "start", "messageId": self.message_id, "messageMetadata": metadata}) + chunk(
            0, {"type": "start-step"}
        )

    def batch(self, events: list) -> bytes:
        out = []
        for event in events:
            if isinstance(event, Snapshot):
                out += self.snapshot(event)
            elif isinstance(event, Token):
                out += self.token(event)
            elif isinstance(event, End):
                out += self.end(event)
            elif isinstance(event, Keepalive):
                out.append(event.sse)
            # Json events: an AI SDK chat's answers are text.
        return b"".join(out)

    def token(self, event: Token) -> list[bytes]:
        kind = event.part
        out = self.open(kind, event.first_seq) if self.part is None or self.part[0] != kind else []
        out.append(chunk(event.last_seq, {"type": f"{kind}-delta", "id": self.part[1], "delta": event.text}))
        self.seq = event.last_seq
        return out

    def snapshot(self, event: Snapshot) -> list[bytes]:
        """The stored answer through `last_seq`, replacing the parts the client holds, if any."""
        out = []
        if self.seq > 0 or self.part is not None:
            # Drops the parts of the step (the message's one step) on the client, whatever it holds.
            out.append(chunk(self.seq, {"type": "reset-step"}))
            self.part = None
        pieces = [(kind, text) for kind, text in ((REASONING, event.reasoning), (TEXT, event.text)) if text]
        for index, (kind, text) in enumerate(pieces, start=1):
            out += self.open(kind, event.first_seq)
            # Only the last piece completes the snapshot: a client cut before it resumes from before it.
            seq = event.last_seq if index == len(pieces) else self.seq
            out.append(chunk(seq, {"type": f"{kind}-delta", "id": self.part[1], "delta": text}))
        self.seq = event.last_seq
        return out

    def open(self, kind: str, first_seq: int) -> list[bytes]:
        out = self.close()
        self.part = (kind, f"{kind}-{first_seq}")
        out.append(chunk(self.seq, {"type": f"{kind}-start", "id": self.part[1]}))
        return out

    def close(self) -> list[bytes]:
        if self.part is None:
            return []
        kind, part_id = self.part
        self.part = None
        return [chunk(self.seq, {"type": f"{kind}-end", "id": part_id})]

    def end(self, event: End) -> list[bytes]:
        out = self.close()
        seq = event.last_seq
        if event.status in (Generation.Status.FAILED, Generation.Status.INTERRUPTED):
            out.append(chunk(seq, {"type": "error", "errorText": error_text(event)}))
        elif event.status == Generation.Status.CANCELLED:
            out.append(chunk(seq, {"type": "abort", "reason": "cancelled"}))
        reason = END_FINISH_REASONS.get(event.status) or FINISH_REASONS.get(event.finish_reason, "other")
        metadata = message_metadata(self.generation_id, event.status)
        out += [
            chunk(seq, {"type": "finish-step"}),
            chunk(seq, {"type": "finish", "finishReason": reason, "messageMetadata": metadata}),
            encode("[DONE]", id=seq),
        ]
        return out


def error_text(event: End) -> str:
    if event.status == Generation.Status.FAILED:
        return f"The answer failed: {event.error}" if event.error else "The answer failed."
    reason = f" ({event.reason})" if event.reason else ""
    return f"The answer was interrupted{reason}; the text so far is kept."


async def ui_message_stream_response(
    request, generation: Generation, *, after_seq: int = 0, slot: str | None = None
) -> StreamingHttpResponse:
    """The generation's UI message stream after `after_seq` (0: the whole message, as the SDK rebuilds it)."""
    encoding = UIMessageStream(
        message_id=generation.assistant_message_id, generation_id=generation.id, after_seq=after_seq
    )
    return await generation_stream_response(request, generation, slot=slot, after_seq=after_seq, encoding=encoding)
