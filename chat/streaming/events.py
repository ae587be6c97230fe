"""Stream events: what a generation publishes and what every transport sends.

One object per hub message is shared by all local subscribers, so each
encoding is computed once per event, not once per client.
"""

import json
from dataclasses import dataclass, field

from ..llm.base import TEXT
from . import sse

END_EVENT_NAMES = {
    "complete": "done",
    "interrupted": "interrupted",
    "failed": "failed",
    "cancelled": "cancelled",
}


class cached_property:
    """`functools.cached_property` without its lock, which Python 3.11 takes on every first
    access: twice a token, 3 % of a loaded process's CPU. Events are used by one thread, the loop's."""

    def __init__(self, compute):
        self.compute = compute

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        # No __set__: once stored in the instance's dict, the value is found there before this descriptor.
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


def dumps(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class StreamEvent:
    name: str
    id: int

    def payload(self) -> dict:
        raise NotImplementedError

    @cached_property
    def data(self) -> str:
        return dumps(self.payload())

    @cached_property
    def sse(self) -> bytes:
        return sse.encode_event(self.id, self.name, self.data)

    @cached_property
    def ws(self) -> str:
        return dumps({"type": self.name, "id": self.id, **self.payload()})


@dataclass(eq=False)
class Token(StreamEvent):
    """Tokens first_seq..last_seq of one part, concatenated; the event id is last_seq.

    Answer text goes out as `token` events, other parts under their own name
    (`reasoning`), so a client that knows only `token` shows only the answer.
    """

    first_seq: int
    last_seq: int
    text: str
    # Each token's own text, when known: a resume or a JSON answer's `json` event may cut the event between them.
    pieces: list[str] | None = field(default=None, repr=False)
    part: str = TEXT

    @property
    def name(self) -> str:
        return "token" if self.part == TEXT else self.part

    @property
    def id(self) -> int:
        return self.last_seq

    def payload(self) -> dict:
        return {"seq": self.last_seq, "text": self.text}

    @cached_property
    def data(self) -> str:
        return f'{{"seq":{self.last_seq},"text":{json.dumps(self.text, ensure_ascii=False)}}}'

    @cached_property
    def ws(self) -> str:
        return f'{{"type":"{self.name}","id":{self.last_seq},"seq":{self.last_seq},"text":{json.dumps(self.text, ensure_ascii=False)}}}'

    def to_message(self) -> dict:
        message = {"type": "gen.token", "first_seq": self.first_seq, "last_seq": self.last_seq, "text": self.text}
        if self.pieces is not None:
            message["pieces"] = self.pieces
        if self.part != TEXT:
            message["part"] = self.part
        return message

    def after(self, seq: int) -> "Token | None":
        """The part of this event after token `seq`; None if nothing is left or the token boundaries are unknown."""
        if self.last_seq <= seq:
            return None
        if seq < self.first_seq:
            return self
        if self.pieces is None or len(self.pieces) != self.last_seq - self.first_seq + 1:
            return None
        pieces = self.pieces[seq - self.first_seq + 1 :]
        return Token(seq + 1, self.last_seq, "".join(pieces), pieces, self.part)

    @classmethod
    def merge(cls, tokens: list["Token"]) -> "Token":
        """Contiguous tokens of one part as one event, keeping each token's own text when every one is known."""
        if len(tokens) == 1:
            return tokens[0]
        pieces = [] if all(t.pieces is not None or t.first_seq == t.last_seq for t in tokens) else None
        if pieces is not None:
            for token in tokens:
                pieces.extend(token.pieces if token.pieces is not None else [token.text])
        return cls(tokens[0].first_seq, tokens[-1].last_seq, "".join(t.text for t in tokens), pieces, tokens[0].part)


@dataclass(eq=False)
class Snapshot(Token):
    """The whole answer up to last_seq in one event, for a client whose tokens cannot be replayed.

    Sent when retention has pruned the tokens, or to a client that starts before
    a continuation's first token. Its text (and reasoning) replace what the client has shown.
    """

    reasoning: str = ""

    @property
    def name(self) -> str:
        return "snapshot"

    def payload(self) -> dict:
        payload = {"seq": self.last_seq, "text": self.text}
        if self.reasoning:
            payload["reasoning"] = self.reasoning
        return payload

    @cached_property
    def data(self) -> str:
        return dumps(self.payload())

    @cached_property
    def ws(self) -> str:
        return dumps({"type": self.name, "id": self.id, **self.payload()})


@dataclass(eq=False)
class Json(StreamEvent):
    """A JSON answer's parse-ready snapshot after token `seq` (docs/protocol.md, "Structured answers")."""

    seq: int
    value: str  # The snapshot, already encoded.
    name = "json"

    @property
    def id(self) -> int:
        return self.seq

    def payload(self) -> dict:
        return {"seq": self.seq, "value": json.loads(self.value)}

    @cached_property
    def data(self) -> str:
        return f'{{"seq":{self.seq},"value":{self.value}}}'

    @cached_property
    def ws(self) -> str:
        return f'{{"type":"json","id":{self.seq},"seq":{self.seq},"value":{self.value}}}'


@dataclass(eq=False)
class End(StreamEvent):
    """The one terminal event; its id is the generation's last sequence number."""

    status: str
    last_seq: int
    finish_reason: str = ""
    reason: str = ""
    error: str = ""
    usage: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return END_EVENT_NAMES[self.status]

    @property
    def id(self) -> int:
        return self.last_seq

    def payload(self) -> dict:
        payload = {"seq": self.last_seq, "status": self.status}
        if self.finish_reason:
            payload["finish_reason"] = self.finish_reason
        if self.reason:
            payload["reason"] = self.reason
        if self.error:
            payload["error"] = self.error
        if self.usage:
            payload["usage"] = self.usage
        return payload

    def to_message(self) -> dict:
        return {
            "type": "gen.end",
            "status": self.status,
            "last_seq": self.last_seq,
            "finish_reason": self.finish_reason,
            "reason": self.reason,
            "error": self.error,
            "usage": self.usage,
        }

    @classmethod
    def of(cls, generation) -> "End":
        return cls(
            status=generation.status,
            last_seq=generation.last_seq,
            finish_reason=generation.finish_reason,
            reason=generation.interrupt_reason,
            error=generation.error,
            usage=generation.usage,
        )


@dataclass(eq=False)
class Cancel:
    """A control message asking the process that runs a generation to stop it."""

    def to_message(self) -> dict:
        return {"type": "gen.cancel"}


@dataclass(eq=False)
class Alive:
    """A run that has been quiet for a heartbeat says it is alive, and how far it got.

    Followers in other processes then need not ask the database whether a
    silent generation has ended; one that is behind `last_seq` lost tokens.
    """

    last_seq: int

    def to_message(self) -> dict:
        return {"type": "gen.alive", "last_seq": self.last_seq}


@dataclass(eq=False)
class Wake:
    """Something was written; subscribers re-read the database (durable streams' appends)."""

    def to_message(self) -> dict:
        return {"type": "gen.wake"}


END_MESSAGE_FIELDS = ("status", "last_seq", "finish_reason", "reason", "error", "usage")


class Keepalive:
    """Nothing happened for a while; transports send a comment or a ping."""

    sse = sse.encode(comment="keepalive")


KEEPALIVE = Keepalive()


def from_message(message: dict) -> Token | End | Alive | Cancel | Wake:
    kind = message["type"]
    if kind == "gen.token":
        return Token(
            message["first_seq"], message["last_seq"], message["text"], message.get("pieces"), message.get("part", TEXT)
        )
    if kind == "gen.end":
        return End(**{k: v for k, v in message.items() if k in END_MESSAGE_FIELDS})
    if kind == "gen.alive":
        return Alive(message["last_seq"])
    if kind == "gen.cancel":
        return Cancel()
    if kind == "gen.wake":
        return Wake()
    raise ValueError(f"unknown hub message type {kind!r}")
