"""Byte-exact SSE encoding."""

import pytest

from chat.streaming.events import End, Token
from chat.streaming.sse import encode


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"data": "hi"}, b"data: hi\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "x", "event": "token", "id": 7}, b"id: 7\nevent: token\ndata: x\n\n"),
        ({"data": "x", "event": "to\nken", "id": "1\r\n2"}, b"id: 12\nevent: token\ndata: x\n\n"),
        ({"retry": 1000}, b"retry: 1000\n\n"),
        ({"comment": "keepalive"}, b": keepalive\n\n"),
        ({"comment": "a\nb"}, b": a\n: b\n\n"),
        ({"comment": "stream", "retry": 500}, b": stream\nretry: 500\n\n"),
        ({"data": "é ✓"}, "data: é ✓\n\n".encode()),
    ],
)
def test_encode(kwargs, expected):
    assert encode(**kwargs) == expected


def test_token_event_encodings():
    token = Token(3, 5, 'say "hi"\n')
    assert token.sse == b'id: 5\nevent: token\ndata: {"seq":5,"text":"say \\"hi\\"\\n"}\n\n'
    assert token.ws == '{"type":"token","id":5,"seq":5,"text":"say \\"hi\\"\\n"}'
    assert token.sse is token.sse, "encoded once, shared by every subscriber"


@pytest.mark.parametrize(
    "status, name", [("complete", "done"), ("interrupted", "interrupted"), ("failed", "failed"), ("cancelled", "cancelled")]
)
def test_end_event_names(status, name):
    end = End(status=status, last_seq=9, reason="upstream_stall" if status == "interrupted" else "")
    assert end.sse.startswith(f"id: 9\nevent: {name}\ndata: ".encode())


def test_hub_messages_round_trip():
    from chat.streaming.events import from_message

    end = End(status="complete", last_seq=4, finish_reason="stop", usage={"total_tokens": 4})
    assert from_message(end.to_message()).payload() == end.payload()
    token = Token(4, 4, "x")
    assert from_message(token.to_message()).payload() == token.payload()


@pytest.mark.parametrize("text", ['hé "quoted" \\ back', "line\nbreak\r\nand\rreturn", "</script>\u2028\u2029", ""])
def test_per_token_encodings_equal_the_generic_ones(text):
    """Token events have hand-written encodings (they are built once per token): they must not drift."""
    from chat.streaming.events import Snapshot, dumps

    for event in (Token(3, 4, text), Snapshot(1, 9, text)):
        assert event.data == dumps(event.payload())
        assert event.ws == dumps({"type": event.name, "id": event.id, **event.payload()})
        assert event.sse == encode(event.data, event=event.name, id=event.id)
        assert event.sse.count(b"\n") == 4  # One data line: JSON escapes every newline.
