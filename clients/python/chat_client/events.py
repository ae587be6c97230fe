"""What a stream delivers, typed: one class per event, parsed from SSE events and WebSocket frames alike."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

TERMINAL = {"done": "complete", "interrupted": "interrupted", "failed": "failed", "cancelled": "cancelled"}


class State(str, Enum):
    """Where following an answer stands (the browser client's states, docs/client.md)."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"  # cut or stalled; retrying in the background
    FALLBACK = "fallback"  # the stored answer, read with a plain request: final
    ERROR = "error"  # final if `final`, else the server cannot be reached and the client keeps trying
    ENDED = "ended"  # the server sent the terminal event: final


@dataclass(frozen=True)
class Posted:
    """The POST's own answer (`posted` event): the user message and the new generation."""

    message: dict
    generation: dict


@dataclass(frozen=True)
class Token:
    """Answer text up to sequence number `seq` (one token, or several merged): append `text`. `seq` is the event id."""

    seq: int
    text: str


@dataclass(frozen=True)
class Reasoning:
    """Reasoning text (a model's thinking), in the same sequence space as tokens: append to the reasoning."""

    seq: int
    text: str


@dataclass(frozen=True)
class Snapshot:
    """The whole text up to `seq`: replace what you have (a pruned or continued answer, a correction).

    `reasoning` is the whole reasoning so far, or None when the answer has none.
    """

    seq: int
    text: str
    reasoning: str | None = None


@dataclass(frozen=True)
class Json:
    """A JSON answer's parse-ready document so far (docs/protocol.md, "Structured answers")."""

    seq: int
    value: Any


@dataclass(frozen=True)
class End:
    """How the answer ended. `fallback` is true when it was read from the stored answer, not the stream."""

    seq: int
    status: str  # complete, interrupted, failed, cancelled
    finish_reason: str = ""
    reason: str = ""
    error: str = ""
    usage: dict = field(default_factory=dict)
    fallback: bool = False


@dataclass(frozen=True)
class StateChange:
    """A transition of the follower's state, with why."""

    state: State
    reason: str = ""
    failures: int = 0  # failed attempts in a row
    fallback: bool = False  # the stored answer is being read instead of the stream
    final: bool = False  # an ERROR that asking again cannot fix
    retry_in: float | None = None  # seconds until the next attempt


Event = Posted | Token | Reasoning | Snapshot | Json | End | StateChange


def parse(kind: str, payload: dict) -> Event | None:
    """The event of an SSE event's name and JSON data, or of a WebSocket frame's type and body; None if unknown."""
    if kind == "token":
        return Token(payload["seq"], payload["text"])
    if kind == "reasoning":
        return Reasoning(payload["seq"], payload["text"])
    if kind == "snapshot":
        return Snapshot(payload["seq"], payload["text"], payload.get("reasoning"))
    if kind == "json":
        return Json(payload["seq"], payload["value"])
    if kind in TERMINAL:
        return End(
            seq=payload["seq"],
            status=payload.get("status") or TERMINAL[kind],
            finish_reason=payload.get("finish_reason") or "",
            reason=payload.get("reason") or "",
            error=payload.get("error") or "",
            usage=payload.get("usage") or {},
        )
    if kind == "posted":
        return Posted(payload["message"], payload["generation"])
    return None


def stored_end(generation: dict) -> End:
    """The end of a generation read with `GET /api/generations/<id>` (the fallback)."""
    return End(
        seq=generation["last_seq"],
        status=generation["status"],
        finish_reason=generation.get("finish_reason") or "",
        reason=generation.get("reason") or "",
        error=generation.get("error") or "",
        usage=generation.get("usage") or {},
        fallback=True,
    )
