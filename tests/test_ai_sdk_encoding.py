"""The UI message stream encoding (chat/transports/ai_sdk.py): events in, the protocol's chunks out, with our ids."""

import json

import pytest

from chat.llm import REASONING
from chat.streaming.events import KEEPALIVE, End, Snapshot, Token
from chat.transports.ai_sdk import UIMessageStream

GENERATION = "5b0c5a0e-0000-4000-8000-000000000001"


def encoder(after_seq: int = 0) -> UIMessageStream:
    return UIMessageStream(message_id=42, generation_id=GENERATION, after_seq=after_seq)


def decoded(body: bytes) -> list[tuple[str | None, object]]:
    """(id, chunk) per event; comments as ("comment", text)."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            out.append(("comment", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("id"), "[DONE]" if fields["data"] == "[DONE]" else json.loads(fields["data"])))
    return out


def test_a_whole_answer_byte_for_byte():
    stream = encoder()
    body = stream.head() + stream.batch([Token(1, 2, "Hello", ["Hel", "lo"])]) + stream.batch(
        [Token(3, 3, " world"), End("complete", 3, finish_reason="stop")]
    )
    assert body == (
        b'id: 0\ndata: {"type":"start","messageId":"42","messageMetadata":{"generationId":"' + GENERATION.encode()
        + b'"}}\n\n'
        b'id: 0\ndata: {"type":"start-step"}\n\n'
        b'id: 0\ndata: {"type":"text-start","id":"text-1"}\n\n'
        b'id: 2\ndata: {"type":"text-delta","id":"text-1","delta":"Hello"}\n\n'
        b'id: 3\ndata: {"type":"text-delta","id":"text-1","delta":" world"}\n\n'
        b'id: 3\ndata: {"type":"text-end","id":"text-1"}\n\n'
        b'id: 3\ndata: {"type":"finish-step"}\n\n'
        b'id: 3\ndata: {"type":"finish","finishReason":"stop","messageMetadata":{"generationId":"'
        + GENERATION.encode() + b'","status":"complete"}}\n\n'
        b"id: 3\ndata: [DONE]\n\n"
    )


@pytest.mark.parametrize(
    "end, before_finish, finish_reason",
    [
        (End("complete", 2, finish_reason="length"), [], "length"),
        (End("complete", 2, finish_reason="invalid_json"), [], "other"),
        (End("failed", 2, error="model exploded"), [{"type": "error", "errorText": "The answer failed: model exploded"}],
         "error"),
        (End("interrupted", 2, reason="upstream_stall"),
         [{"type": "error", "errorText": "The answer was interrupted (upstream_stall); the text so far is kept."}],
         "interrupted"),
        (End("cancelled", 2), [{"type": "abort", "reason": "cancelled"}], "other"),
    ],
)
def test_each_end(end, before_finish, finish_reason):
    stream = encoder()
    stream.head()
    chunks = [chunk for _, chunk in decoded(stream.batch([Token(1, 2, "Hi"), end]))]
    assert chunks[:3] == [
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hi"},
        {"type": "text-end", "id": "text-1"},
    ]
    assert chunks[3:-3] == before_finish
    assert chunks[-3:] == [
        {"type": "finish-step"},
        {"type": "finish", "finishReason": finish_reason,
         "messageMetadata": {"generationId": GENERATION, "status": end.status}},
        "[DONE]",
    ]


def test_a_resume_inside_a_part_opens_it_again():
    """After Last-Event-ID 5: no start (the client has the message), the part opened before its next delta."""
    stream = encoder(after_seq=5)
    assert decoded(stream.head()) == [("comment", "resume")]
    assert decoded(stream.batch([Token(6, 7, "more"), KEEPALIVE])) == [
        ("5", {"type": "text-start", "id": "text-6"}),
        ("7", {"type": "text-delta", "id": "text-6", "delta": "more"}),
        ("comment", "keepalive"),
    ]


def test_an_answer_with_nothing_ends_with_no_part():
    stream = encoder()
    stream.head()
    assert [c if c == "[DONE]" else c["type"] for _, c in decoded(stream.batch([End("cancelled", 0)]))] == [
        "abort", "finish-step", "finish", "[DONE]"
    ]


def test_a_snapshot_first_is_the_answer_so_far():
    """A continuation's stream from its start: the text before it in one delta, then its tokens in the same part."""
    stream = encoder()
    stream.head()
    assert decoded(stream.batch([Snapshot(1, 39, "Before the hand-on."), Token(40, 40, " After.")])) == [
        ("0", {"type": "text-start", "id": "text-1"}),
        ("39", {"type": "text-delta", "id": "text-1", "delta": "Before the hand-on."}),
        ("40", {"type": "text-delta", "id": "text-1", "delta": " After."}),
    ]


def test_a_snapshot_after_tokens_replaces_them():
    """Retention pruned what the client missed: reset-step drops its parts, then the stored answer whole."""
    stream = encoder(after_seq=3)
    stream.head()
    assert decoded(stream.batch([Snapshot(1, 9, "The stored answer.")])) == [
        ("3", {"type": "reset-step"}),
        ("3", {"type": "text-start", "id": "text-1"}),
        ("9", {"type": "text-delta", "id": "text-1", "delta": "The stored answer."}),
    ]


def test_reasoning_then_text():
    """Each part opened before its first delta and closed when the next begins; ids one sequence across both."""
    stream = encoder()
    stream.head()
    body = stream.batch([Token(1, 2, "Let me", part=REASONING), Token(3, 3, " think", part=REASONING)])
    body += stream.batch([Token(4, 5, "Answer."), End("complete", 5)])
    assert decoded(body)[:7] == [
        ("0", {"type": "reasoning-start", "id": "reasoning-1"}),
        ("2", {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Let me"}),
        ("3", {"type": "reasoning-delta", "id": "reasoning-1", "delta": " think"}),
        ("3", {"type": "reasoning-end", "id": "reasoning-1"}),
        ("3", {"type": "text-start", "id": "text-4"}),
        ("5", {"type": "text-delta", "id": "text-4", "delta": "Answer."}),
        ("5", {"type": "text-end", "id": "text-4"}),
    ]


def test_a_resume_inside_the_reasoning_opens_it_again():
    stream = encoder(after_seq=2)
    stream.head()
    assert decoded(stream.batch([Token(3, 3, " think", part=REASONING), Token(4, 4, "Answer.")])) == [
        ("2", {"type": "reasoning-start", "id": "reasoning-3"}),
        ("3", {"type": "reasoning-delta", "id": "reasoning-3", "delta": " think"}),
        ("3", {"type": "reasoning-end", "id": "reasoning-3"}),
        ("3", {"type": "text-start", "id": "text-4"}),
        ("4", {"type": "text-delta", "id": "text-4", "delta": "Answer."}),
    ]


@pytest.mark.parametrize(
    "snapshot, next_token, chunks",
    [
        # Cut inside the reasoning: the reasoning part stays open for the tokens that follow.
        (Snapshot(1, 6, "", reasoning="Thinking so far"), Token(7, 7, " more", part=REASONING), [
            ("0", {"type": "reasoning-start", "id": "reasoning-1"}),
            ("6", {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Thinking so far"}),
            ("7", {"type": "reasoning-delta", "id": "reasoning-1", "delta": " more"}),
        ]),
        # Cut inside the text: the reasoning whole and closed, the text open; only the text's delta says 9,
        # so a client cut between the two resumes from before the snapshot, and gets it whole again.
        (Snapshot(1, 9, "Answer", reasoning="Thought"), Token(10, 10, " on"), [
            ("0", {"type": "reasoning-start", "id": "reasoning-1"}),
            ("0", {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Thought"}),
            ("0", {"type": "reasoning-end", "id": "reasoning-1"}),
            ("0", {"type": "text-start", "id": "text-1"}),
            ("9", {"type": "text-delta", "id": "text-1", "delta": "Answer"}),
            ("10", {"type": "text-delta", "id": "text-1", "delta": " on"}),
        ]),
    ],
)
def test_a_snapshot_with_reasoning(snapshot, next_token, chunks):
    stream = encoder()
    stream.head()
    assert decoded(stream.batch([snapshot, next_token])) == chunks
