"""Every read and write of the general namespace: one transaction per request, run off the event loop.

Each public coroutine is one `sync_to_async` unit of work. Writers lock the
stream's row, so appends to one stream are serialised across processes, and
the idempotent producer check and the append commit together (protocol 5.2.1).
"""

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from durable.conf import setting
from durable.models import Producer, Stream, StreamMessage
from durable.protocol import (
    STREAM_CLOSED,
    STREAM_NEXT_OFFSET,
    ProtocolError,
    encode_offset,
    is_json,
    media_type,
)

PRODUCER_EPOCH = "Producer-Epoch"
PRODUCER_SEQ = "Producer-Seq"
# Messages whose sizes one read looks at; a catch-up read returns at most this many.
READ_MAX_MESSAGES = 10000


@dataclass(frozen=True)
class ProducerClaim:
    producer_id: str
    epoch: int
    seq: int

    def as_json(self) -> list:
        return [self.producer_id, self.epoch, self.seq]


@dataclass
class Outcome:
    """A write's answer: status and headers; `changed` when readers must be woken."""

    status: int
    headers: dict = field(default_factory=dict)
    changed: bool = False
    group: str = ""


@dataclass
class Chunk:
    """What one read returns, consistent with one look at the stream's row."""

    content_type: str
    messages: list[bytes]
    next_seq: int
    tail: int
    closed: bool

    @property
    def up_to_date(self) -> bool:
        return self.next_seq == self.tail

    @property
    def at_eof(self) -> bool:
        return self.closed and self.up_to_date


def live(queryset, at: datetime | None = None):
    """The stream, unless it had expired by `at` (default now); an expired one found on the way is deleted.

    Requests pass the time they arrived: one that came in time is served even when a busy
    server gets to it later. A TTL's slide is still stamped when the work is done.
    """
    stream = queryset.first()
    if stream is not None and stream.is_expired(at or timezone.now()):
        stream.delete()
        return None
    return stream


# A JSON string (escapes included) in a body, matched in linear time; what is left holds the brackets.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests brackets deeper than `limit`, found without parsing it."""
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value")


def json_messages(body: bytes, *, allow_empty: bool) -> list[bytes]:
    """A JSON append's messages: an array is flattened one level (protocol 9.1.2); each stored compact.

    Refused: what is not JSON (NaN and Infinity included) or not Unicode (a lone
    surrogate escape), nesting past DURABLE_MAX_JSON_DEPTH, and more messages
    than DURABLE_MAX_MESSAGES_PER_APPEND.
    """
    depth = setting("DURABLE_MAX_JSON_DEPTH")
    if nesting_exceeds(body, depth):
        raise ProtocolError(400, "json_too_deep", f"The JSON nests deeper than {depth} levels.")
    try:
        value = json.loads(body, parse_constant=not_json)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(400, "invalid_json", f"The body is not valid JSON: {error}.") from None
    values = value if isinstance(value, list) else [value]
    if not values and not allow_empty:
        raise ProtocolError(400, "empty_json_array", "An append of an empty JSON array adds nothing; send at least one message.")
    most = setting("DURABLE_MAX_MESSAGES_PER_APPEND")
    if len(values) > most:
        raise ProtocolError(413, "too_many_messages", f"An append may add at most {most} messages; this one has {len(values)}.")
    try:
        return [json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() for item in values]
    except UnicodeEncodeError:
        raise ProtocolError(400, "invalid_json", "The body has a lone surrogate escape: \\ud800-\\udfff come in pairs.") from None


def messages_of(body: bytes, content_type: str, *, allow_empty: bool) -> list[bytes]:
    """What an append (or a create's initial body) adds: JSON's messages, or the body as one message."""
    if not body:
        return []
    return json_messages(body, allow_empty=allow_empty) if is_json(content_type) else [body]


def add_messages(stream: Stream, data: list[bytes]) -> None:
    now = timezone.now()
    StreamMessage.objects.bulk_create(
        StreamMessage(stream=stream, seq=stream.tail + i, data=item, size=len(item), created_at=now)
        for i, item in enumerate(data, start=1)
    )
    stream.tail += len(data)
    stream.stored_bytes += sum(len(item) for item in data)


# --- Per-user quotas ---------------------------------------------------------------


def check_stream_quota(owner_id: int, at: datetime | None) -> None:
    """A 403 when the user has DURABLE_MAX_STREAMS_PER_USER streams (expired ones are dropped first)."""
    most = setting("DURABLE_MAX_STREAMS_PER_USER")
    streams = Stream.objects.filter(owner_id=owner_id)
    if not most or streams.count() < most:
        return
    now = at or timezone.now()
    expired = [s.pk for s in streams.filter(Q(ttl_s__isnull=False) | Q(expires_at__isnull=False)) if s.is_expired(now)]
    Stream.objects.filter(pk__in=expired).delete()
    if streams.count() >= most:
        raise ProtocolError(403, "too_many_streams", f"You have {most} streams, the most allowed; delete one first.")


def check_bytes_quota(owner_id: int, adding: list[bytes]) -> None:
    """A 413 when the messages would take the user's stored bytes past DURABLE_MAX_BYTES_PER_USER."""
    most = setting("DURABLE_MAX_BYTES_PER_USER")
    size = sum(len(item) for item in adding)
    if not most or not size:
        return
    stored = Stream.objects.filter(owner_id=owner_id).aggregate(n=Sum("stored_bytes"))["n"] or 0
    if stored + size > most:
        raise ProtocolError(
            413, "storage_quota_exceeded",
            f"Your streams hold {stored} bytes; {size} more would pass the {most} allowed. Delete a stream first.",
        )


def closed_headers(stream: Stream) -> dict:
    return {STREAM_NEXT_OFFSET: encode_offset(stream.tail), STREAM_CLOSED: "true"}


# --- Units of work (sync) --------------------------------------------------------


def _find(owner_id: int, path: str, *, at: datetime | None = None) -> Stream | None:
    with transaction.atomic():
        return live(Stream.objects.filter(owner_id=owner_id, path=path), at)


def _create(
    owner_id, path, *, content_type, ttl_s, expires_at, closed, body, at: datetime | None = None
) -> tuple[Stream, bool]:
    """Create the stream, or return the existing one if its configuration matches (else a 409)."""
    messages = messages_of(body, content_type, allow_empty=True)  # Parsed before any lock is taken.
    for _ in range(2):
        try:
            with transaction.atomic():
                existing = live(Stream.objects.select_for_update().filter(owner_id=owner_id, path=path), at)
                if existing is not None:
                    same = (
                        media_type(existing.content_type) == media_type(content_type)
                        and existing.ttl_s == ttl_s
                        and existing.expires_at == expires_at
                        and existing.closed == closed
                    )
                    if not same:
                        raise ProtocolError(
                            409, "stream_exists", "A stream exists at this path with another content type, TTL, expiry or closure."
                        )
                    return existing, False
                check_stream_quota(owner_id, at)
                check_bytes_quota(owner_id, messages)
                stream = Stream.objects.create(
                    owner_id=owner_id, path=path, content_type=content_type, ttl_s=ttl_s, expires_at=expires_at, closed=closed
                )
                if messages:
                    add_messages(stream, messages)
                    stream.save(update_fields=["tail", "stored_bytes"])
                return stream, True
        except IntegrityError:
            continue  # Created by a concurrent PUT: compare with that one.
    raise ProtocolError(409, "stream_exists", "The stream was created concurrently; retry.")


def _check_producer(stream: Stream, claim: ProducerClaim) -> tuple[Producer | None, Outcome | None]:
    """Validate a producer's (epoch, seq) without changing it: (its state, or an early answer)."""
    state = Producer.objects.filter(stream=stream, producer_id=claim.producer_id).first()
    if state is None or claim.epoch > state.epoch:
        if claim.seq != 0:
            if state is None:
                return None, Outcome(409, {"Producer-Expected-Seq": "0", "Producer-Received-Seq": str(claim.seq)})
            raise ProtocolError(400, "invalid_producer_seq", "A new Producer-Epoch must start at Producer-Seq 0.")
        return state, None
    if claim.epoch < state.epoch:
        return state, Outcome(403, {PRODUCER_EPOCH: str(state.epoch)})
    if claim.seq <= state.last_seq:
        return state, Outcome(204, {PRODUCER_EPOCH: str(claim.epoch), PRODUCER_SEQ: str(state.last_seq)})
    if claim.seq > state.last_seq + 1:
        return state, Outcome(
            409, {"Producer-Expected-Seq": str(state.last_seq + 1), "Producer-Received-Seq": str(claim.seq)}
        )
    return state, None


def _save_producer(stream: Stream, state: Producer | None, claim: ProducerClaim) -> None:
    if state is None:
        Producer.objects.create(stream=stream, producer_id=claim.producer_id, epoch=claim.epoch, last_seq=claim.seq)
    else:
        Producer.objects.filter(pk=state.pk).update(epoch=claim.epoch, last_seq=claim.seq)


def _append(
    owner_id, path, *, content_type, body, stream_seq, claim: ProducerClaim | None, close, at: datetime | None = None
) -> Outcome:
    # Parsed as the request says before the stream's row is locked; the stream's own answers
    # (gone, closed, another content type) come before the body's faults.
    try:
        messages, refusal = messages_of(body, content_type, allow_empty=False), None
    except ProtocolError as error:
        messages, refusal = [], error
    with transaction.atomic():
        stream = live(Stream.objects.select_for_update().filter(owner_id=owner_id, path=path), at)
        if stream is None:
            raise ProtocolError(404, "not_found", "No stream at this path.")
        producer_headers = {PRODUCER_EPOCH: str(claim.epoch), PRODUCER_SEQ: str(claim.seq)} if claim else {}
        if stream.closed:
            if claim is not None and stream.closed_by == claim.as_json():
                return Outcome(204, {**closed_headers(stream), **producer_headers})
            if close and not body and claim is None:
                return Outcome(204, closed_headers(stream))  # Closing is idempotent.
            raise ProtocolError(409, "stream_closed", "The stream is closed: nothing more can be appended.", closed_headers(stream))
        if body and media_type(content_type) != media_type(stream.content_type):
            raise ProtocolError(
                409, "content_type_mismatch", f"This stream's content type is {stream.content_type}, not {content_type}."
            )
        state = None
        if claim is not None:
            state, early = _check_producer(stream, claim)
            if early is not None:
                return early
        if body and stream_seq is not None and stream.last_stream_seq and stream_seq <= stream.last_stream_seq:
            raise ProtocolError(
                409, "stream_seq_conflict", f"Stream-Seq {stream_seq!r} is not after the last one, {stream.last_stream_seq!r}."
            )
        if refusal is not None:
            raise refusal
        if body:
            check_bytes_quota(owner_id, messages)
            add_messages(stream, messages)
            if stream_seq is not None:
                stream.last_stream_seq = stream_seq
        if claim is not None:
            _save_producer(stream, state, claim)
        if close:
            stream.closed = True
            stream.closed_by = claim.as_json() if claim else None
        stream.touched_at = timezone.now()
        stream.save(update_fields=["tail", "stored_bytes", "last_stream_seq", "closed", "closed_by", "touched_at"])
    headers = {STREAM_NEXT_OFFSET: encode_offset(stream.tail), **producer_headers}
    if close:
        headers[STREAM_CLOSED] = "true"
    # An accepted producer write is a 200 (a duplicate is the 204); a plain append is a 204 (protocol 5.2).
    status = 200 if claim is not None and body else 204
    return Outcome(status, headers, changed=True, group=stream.group)


def _read(stream_id: int, after: int | None, *, touch: bool, at: datetime | None = None) -> Chunk | None:
    """Messages after `after` (None: from the tail), up to the read chunk size; None if the stream is gone."""
    with transaction.atomic():
        stream = live(Stream.objects.filter(pk=stream_id), at)
        if stream is None:
            return None
        if after is None:
            after = stream.tail
        if after > stream.tail:
            raise ProtocolError(400, "invalid_offset", "That offset is past the end of this stream.")
        if after < stream.pruned_through:
            raise ProtocolError(410, "offset_gone", "Retention has dropped the messages at that offset; read from the start.")
        if touch and stream.ttl_s is not None:
            Stream.objects.filter(pk=stream.pk).update(touched_at=timezone.now())
        messages, next_seq = [], after
        if after < stream.tail:
            sizes = (
                StreamMessage.objects.filter(stream=stream, seq__gt=after, seq__lte=stream.tail)
                .order_by("seq")
                .values_list("seq", "size")[:READ_MAX_MESSAGES]
            )
            budget = setting("DURABLE_READ_CHUNK_BYTES")
            for seq, size in sizes:
                next_seq = seq
                budget -= size
                if budget <= 0:
                    break
            rows = StreamMessage.objects.filter(stream=stream, seq__gt=after, seq__lte=next_seq).order_by("seq")
            messages = [bytes(data) for data in rows.values_list("data", flat=True)]
        return Chunk(stream.content_type, messages, next_seq, stream.tail, stream.closed)


def _delete(owner_id, path, *, at: datetime | None = None) -> str | None:
    with transaction.atomic():
        stream = live(Stream.objects.select_for_update().filter(owner_id=owner_id, path=path), at)
        if stream is None:
            return None
        group = stream.group
        stream.delete()
        return group


def prune(now, retention_cutoff) -> tuple[int, int]:
    """Delete expired streams, and messages created before the cutoff; return how many of each."""
    candidates = Stream.objects.filter(Q(ttl_s__isnull=False) | Q(expires_at__isnull=False))
    expired = [stream.pk for stream in candidates if stream.is_expired(now)]
    streams = Stream.objects.filter(pk__in=expired).delete()[1].get("durable.Stream", 0)
    messages = 0
    if retention_cutoff is not None:
        with transaction.atomic():
            old = StreamMessage.objects.filter(created_at__lt=retention_cutoff)
            per_stream = old.values("stream_id").annotate(last=Max("seq"), size=Sum("size"))
            for stream_id, last, size in per_stream.values_list("stream_id", "last", "size"):
                Stream.objects.filter(pk=stream_id).update(stored_bytes=F("stored_bytes") - size)
                Stream.objects.filter(pk=stream_id, pruned_through__lt=last).update(pruned_through=last)
            messages = old.delete()[1].get("durable.StreamMessage", 0)
    return streams, messages


find = sync_to_async(_find)
create = sync_to_async(_create)
append = sync_to_async(_append)
read = sync_to_async(_read)
delete = sync_to_async(_delete)
