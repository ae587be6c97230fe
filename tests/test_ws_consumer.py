"""The WebSocket consumer on its own, through Channels' WebsocketCommunicator: no server, the real database.

tests/test_ws.py checks the same route over a real socket; a failure here
points at the consumer rather than at Daphne, the middleware or the client.
"""

import json
import uuid

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from chat.models import StreamConnection
from chat.server.routing import websocket_urlpatterns
from tests.support import factories
from tests.support.client import assert_ids_increase
from tests.support.wait import eventually

# The consumer's database work runs on other threads: rows must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = ["Resume", " by", " event", " id", ",", " then", " replay", " from", " the", " database", "."]
TEXT = "".join(TOKENS)


def app(user, **scope):
    """The consumer's route, with the user (and anything else) the middleware would have put in the scope."""
    router = URLRouter(websocket_urlpatterns)

    async def application(base, receive, send):
        return await router({**base, "user": user, **scope}, receive, send)

    return application


async def follow(user, generation_id, query: str = "", **scope) -> tuple[list[dict], int]:
    """Every frame until the consumer closes the socket, and the close code."""
    communicator = WebsocketCommunicator(app(user, **scope), f"/ws/generations/{generation_id}/{query}")
    connected, _ = await communicator.connect(timeout=30)
    assert connected, "the socket is always accepted, then closed with a code"
    frames = []
    try:
        while (message := await communicator.receive_output(timeout=30))["type"] != "websocket.close":
            frames.append(json.loads(message["text"]))
        return frames, message["code"]
    finally:
        await communicator.disconnect()


@pytest.fixture
def alice():
    return factories.user("alice")


@pytest.mark.parametrize(
    "status, reason, code",
    [("complete", "", 1000), ("interrupted", "upstream_stall", 4000), ("failed", "", 4001), ("cancelled", "", 4002)],
)
async def test_a_stored_answer_replays_whole_and_closes_with_its_status_code(alice, status, reason, code):
    tokens = [] if status == "failed" else TOKENS
    generation = await factories_generation(alice, status=status, reason=reason, tokens=tokens)
    frames, close_code = await follow(alice, generation.pk)
    *token_frames, end = frames
    assert "".join(f["text"] for f in token_frames) == ("" if status == "failed" else TEXT)
    if token_frames:
        assert_ids_increase([f["id"] for f in token_frames], last=generation.last_seq)
    assert end["type"] == {"complete": "done"}.get(status, status) and end["seq"] == generation.last_seq
    assert close_code == code
    row = await eventually(lambda: StreamConnection.objects.filter(generation=generation, ended_at__isnull=False).afirst())
    assert (row.transport, row.end_reason, row.tokens_sent) == ("ws", "completed", generation.last_seq)


@pytest.mark.parametrize("after", [1, 4, 10])
async def test_a_resumed_follow_gives_exactly_the_tokens_after_the_last_event_id(alice, after):
    generation = await factories_generation(alice, tokens=TOKENS)
    frames, close_code = await follow(alice, generation.pk, f"?last_event_id={after}")
    tokens = [f for f in frames if f["type"] == "token"]
    assert "".join(f["text"] for f in tokens) == "".join(TOKENS[after:])
    assert_ids_increase([f["id"] for f in tokens], after=after, last=len(TOKENS))
    assert close_code == 1000


@pytest.mark.parametrize(
    "who, scope, code, close_code",
    [
        ("anonymous", {}, "unauthenticated", 4401),
        ("alice", {"auth_error": "The bearer token is invalid, expired or revoked."}, "invalid_token", 4401),
        ("bob", {}, "not_found", 4404),
    ],
)
async def test_refusals_send_an_error_frame_then_close(alice, who, scope, code, close_code):
    generation = await factories_generation(alice)
    user = AnonymousUser() if who == "anonymous" else await user_named(who)
    frames, closed_with = await follow(user, generation.pk, **scope)
    assert [f["type"] for f in frames] == ["error"] and frames[0]["error"]["code"] == code
    assert closed_with == close_code


async def test_an_unknown_generation_is_not_found(alice):
    frames, close_code = await follow(alice, uuid.uuid4())
    assert frames[0]["error"]["code"] == "not_found" and close_code == 4404


@pytest.mark.parametrize("value", ["abc", "-1", str(2**31)])
async def test_a_bad_last_event_id_is_refused(alice, value):
    generation = await factories_generation(alice)
    frames, close_code = await follow(alice, generation.pk, f"?last_event_id={value}")
    assert frames[0]["error"] == {**frames[0]["error"], "code": "invalid_last_event_id", "field": "last_event_id"}
    assert close_code == 4400


async def test_past_the_stored_end_gives_the_stored_text_as_a_snapshot(alice):
    """Tokens a killed server sent but never stored: the client is rewound to the stored text."""
    generation = await factories_generation(alice, tokens=TOKENS)
    frames, close_code = await follow(alice, generation.pk, f"?last_event_id={len(TOKENS) + 3}")
    assert [(f["type"], f["seq"]) for f in frames] == [("snapshot", len(TOKENS)), ("done", len(TOKENS))]
    assert frames[0]["text"] == TEXT and close_code == 1000


async def test_ping_unknown_frames_and_cancel_while_running(alice, monkeypatch):
    """On a running answer: ping gets pong, junk an error frame, and cancel reaches the cancel action."""
    cancelled = []

    async def generation_cancel(*, generation):
        cancelled.append(generation.pk)

    monkeypatch.setattr("chat.actions.generation_cancel", generation_cancel)
    generation = await factories_generation(alice, status="streaming", tokens=TOKENS, heartbeat_age_s=0)
    communicator = WebsocketCommunicator(app(alice), f"/ws/generations/{generation.pk}/")
    assert (await communicator.connect(timeout=30))[0]
    try:
        text = ""
        while text != TEXT:  # The stored tokens first; then the answer runs on, silent.
            frame = await communicator.receive_json_from(timeout=30)
            assert frame["type"] == "token", frame
            text += frame["text"]
        await communicator.send_to(text_data=json.dumps({"type": "ping"}))
        assert await communicator.receive_json_from(timeout=30) == {"type": "pong"}
        await communicator.send_to(text_data="not json")
        error = (await communicator.receive_json_from(timeout=30))["error"]
        assert error["code"] == "invalid_message"
        await communicator.send_to(text_data=json.dumps({"type": "cancel"}))
        assert await eventually(lambda: cancelled) == [generation.pk]
    finally:
        await communicator.disconnect()
    row = await eventually(lambda: StreamConnection.objects.filter(generation=generation, ended_at__isnull=False).afirst())
    assert row.end_reason == "client_gone"


async def factories_generation(owner, **options):
    from asgiref.sync import sync_to_async

    return await sync_to_async(factories.generation)(owner, **options)


async def user_named(name: str):
    from asgiref.sync import sync_to_async

    return await sync_to_async(factories.user)(name)
