"""Rows in every state, written straight to the test database, for the admin, reaper and retention tests."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from chat.models import Conversation, Generation, Message, StreamConnection, TokenChunk

TERMINAL = {"complete", "interrupted", "failed", "cancelled"}


def user(username: str = "alice", **extra):
    found = get_user_model().objects.filter(username=username).first()
    return found or get_user_model().objects.create_user(username, password=f"{username}-password", **extra)


def generation(
    owner=None,
    *,
    status: str = "complete",
    reason: str = "",
    tokens: list[str] | None = None,
    reasoning: list[str] = (),
    chunk_size: int = 3,
    age_s: float = 60.0,
    token_interval_s: float = 0.05,
    stall_at_chunk: int | None = None,
    stall_s: float = 5.0,
    heartbeat_age_s: float | None = None,
    prompt: str = "How do I resume a stream?",
    continued_from: Generation | None = None,
    connections: list[dict] = (),
    provider: str = "simulated",
) -> Generation:
    """A generation `age_s` old with its messages, persisted chunks and client connections.

    Its `reasoning` tokens, if any, come before its text `tokens`, in chunks of their own.
    The assistant message holds the parts as the runner would leave them: the
    whole text once the generation has ended, only a continuation's prefix while it runs.
    """
    owner = owner or user()
    tokens = ["Resume", " by", " event", " id", ",", " then", " replay", " from", " the", " database", "."] if tokens is None else tokens
    now = timezone.now()
    created = now - timedelta(seconds=age_s)
    if continued_from is not None:
        conversation, user_message = continued_from.conversation, continued_from.user_message
        assistant = continued_from.assistant_message
        first_seq = continued_from.last_seq + 1
    else:
        conversation = Conversation.objects.create(owner=owner, title=prompt[:40])
        user_message = Message.objects.create(conversation=conversation, role="user", content=prompt)
        assistant = Message.objects.create(conversation=conversation, role="assistant")
        first_seq = 1
    # (part, its tokens) per chunk, in order.
    batches = [
        (part, items[index : index + chunk_size])
        for part, items in (("reasoning", reasoning), ("text", tokens))
        for index in range(0, len(items), chunk_size)
    ]
    token_count = len(reasoning) + len(tokens)
    last_seq = first_seq + token_count - 1
    terminal = status in TERMINAL
    chunk_times, moment = [], created + timedelta(seconds=0.3)
    for number in range(len(batches)):
        moment += timedelta(seconds=token_interval_s * chunk_size)
        if number == stall_at_chunk:
            moment += timedelta(seconds=stall_s)
        chunk_times.append(moment)
    finished = (chunk_times[-1] if chunk_times else created) + timedelta(seconds=0.1) if terminal else None
    g = Generation.objects.create(
        conversation=conversation,
        user_message=user_message,
        assistant_message=assistant,
        continued_from=continued_from,
        provider=provider,
        model="simulated-1",
        status=status,
        interrupt_reason=reason,
        finish_reason="stop" if status == "complete" else "",
        error="simulated upstream error (HTTP 500)" if status == "failed" else "",
        first_seq=first_seq,
        last_seq=last_seq,
        token_count=token_count,
        worker="" if status == "queued" else "host:1234:abcdef",
    )
    beat = now - timedelta(seconds=heartbeat_age_s) if heartbeat_age_s is not None else None
    Generation.objects.filter(pk=g.pk).update(
        created_at=created,
        first_token_at=chunk_times[0] if chunk_times else None,
        finished_at=finished,
        heartbeat_at=beat,
    )
    seq = first_seq
    for number, (part, batch) in enumerate(batches):
        chunk = TokenChunk.objects.create(
            generation=g, first_seq=seq, last_seq=seq + len(batch) - 1, tokens=batch, part=part
        )
        TokenChunk.objects.filter(pk=chunk.pk).update(created_at=chunk_times[number])
        seq += len(batch)
    if terminal:
        assistant.reasoning += "".join(reasoning)
        assistant.content += "".join(tokens)
        assistant.save()
    for spec in connections:
        connection = StreamConnection.objects.create(
            generation=g,
            user=owner,
            transport=spec.get("transport", "sse"),
            resumed_from=spec.get("resumed_from"),
            events_sent=spec.get("events_sent", 3),
            tokens_sent=spec.get("tokens_sent", 3),
            end_reason=spec.get("end_reason", "completed"),
            client_addr="127.0.0.1",
        )
        started = created + timedelta(seconds=spec.get("at_s", 0.1))
        StreamConnection.objects.filter(pk=connection.pk).update(
            started_at=started,
            ended_at=started + timedelta(seconds=spec.get("lasted_s", 1.0)) if spec.get("end_reason", "completed") else None,
        )
    g.refresh_from_db()
    return g


def every_state(owner=None) -> dict[str, Generation]:
    """One generation per status and interruption reason, some with reconnects."""
    owner = owner or user()
    cut = [{"end_reason": "client_gone", "lasted_s": 0.4}, {"resumed_from": 3, "at_s": 1.0, "end_reason": "completed"}]
    return {
        "queued": generation(owner, status="queued", tokens=[], age_s=120),
        "streaming": generation(owner, status="streaming", age_s=2, heartbeat_age_s=0.5, connections=[{"end_reason": ""}]),
        "complete": generation(owner, status="complete", connections=cut),
        "upstream_stall": generation(owner, status="interrupted", reason="upstream_stall", stall_at_chunk=2),
        "upstream_error": generation(owner, status="interrupted", reason="upstream_error", connections=cut),
        "server_shutdown": generation(
            owner, status="interrupted", reason="server_shutdown", connections=[{"end_reason": "server_shutdown"}]
        ),
        "worker_lost": generation(owner, status="interrupted", reason="worker_lost", age_s=600),
        "operator": generation(owner, status="interrupted", reason="operator", age_s=3 * 86400),
        "failed": generation(owner, status="failed", tokens=[], age_s=30),
        "cancelled": generation(owner, status="cancelled", connections=[{"end_reason": "completed"}]),
    }
