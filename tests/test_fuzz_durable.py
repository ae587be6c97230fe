"""Property-based tests of Durable Streams on every backend (issue 27): headers, bodies, offsets and paths.

Whatever a client sends, the answer is below 500, and a JSON 4xx is in the
one error shape; afterwards every stream slot of the user is free again.
CHAT_FUZZ_EXAMPLES sets the examples per property.
"""

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.fuzz import FUZZ, assert_clear_answer, header_bytes, send, values
from tests.support.server import USERS
from tests.support.wait import eventually_sync

DS = "/ds/v1/stream"
SLOTS = 3
# A few streams the properties share, so that appends and reads meet existing ones; then any path at all.
PATHS = [f"fuzz/{kind}" for kind in ("json", "text", "bytes")]
paths = st.one_of(st.sampled_from(PATHS), st.text(min_size=1, max_size=60), st.sampled_from(["..", "a//b", "generations/x", "__ds/x"]))
content_types = st.one_of(
    st.sampled_from(["application/json", "text/plain", "application/octet-stream", "application/json; charset=utf-8"]),
    st.just("text/plain; x=" + "a" * 300),
    values,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity included: not JSON
    st.sampled_from([b'"\\ud800"', b'["\\udfff"]', b"NaN", b"[]", b"", b"[1,", b"\xff\xfe"]),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=5000).map(lambda n: json.dumps([0] * n).encode()),
    st.binary(max_size=300),
)
instants = st.one_of(
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2030-01-01T00:00:00"]),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)).map(
        lambda moment: moment.isoformat()
    ),
    values,
)
ttls = st.one_of(st.integers(min_value=-1, max_value=2**40).map(str), st.sampled_from(["2147483648", "2147483647", "01"]), values)
optional = st.one_of(st.none(), values)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ds(request, start_server):
    server = start_server(
        request.param, CHAT_MAX_STREAMS_PER_USER=SLOTS, DURABLE_LONG_POLL_TIMEOUT_S=1, DURABLE_SSE_MAX_S=1,
        DURABLE_MAX_STREAMS_PER_USER=50, DURABLE_MAX_BYTES_PER_USER=4 * 1024 * 1024,
    )
    token = httpx.post(f"{server.url}/api/auth/token", json={"username": "alice", "password": USERS["alice"]}).json()["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for path, content_type in zip(PATHS, ("application/json", "text/plain", "application/octet-stream")):
            http.put(f"{DS}/{path}", headers={"Content-Type": content_type})
        yield http


def url(path: str) -> str:
    return f"{DS}/{quote(path, safe='/')}"


def headers_of(**named) -> dict:
    return {name.replace("_", "-"): header_bytes(value) for name, value in named.items() if value is not None}


@FUZZ
@given(path=paths, content_type=content_types, ttl=st.one_of(st.none(), ttls), expires=st.one_of(st.none(), instants),
       closed=optional, body=bodies)
@example(path="fuzz/new", content_type="text/plain", ttl="2147483648", expires=None, closed=None, body=b"")
@example(path="fuzz/new", content_type="text/plain", ttl=None, expires="9999-12-31T23:59:59-14:00", closed=None, body=b"")
def test_create(ds, path, content_type, ttl, expires, closed, body):
    headers = headers_of(Content_Type=content_type, Stream_TTL=ttl, Stream_Expires_At=expires, Stream_Closed=closed)
    assert_clear_answer(send(ds, "PUT", url(path), headers=headers, content=body))


@FUZZ
@given(path=paths, content_type=content_types, seq=optional, producer=st.one_of(st.none(), st.tuples(values, values, values)),
       closed=optional, body=bodies)
@example(path="fuzz/json", content_type="application/json", seq=None, producer=None, closed=None, body=b"[" * 100_000 + b"]" * 100_000)
@example(path="fuzz/json", content_type="application/json", seq=None, producer=None, closed=None, body=b'"\\ud800"')
@example(path="fuzz/text", content_type="text/plain", seq="s" * 300, producer=None, closed=None, body=b"x")
def test_append(ds, path, content_type, seq, producer, closed, body):
    producer_id, epoch, producer_seq = producer or (None, None, None)
    headers = headers_of(
        Content_Type=content_type, Stream_Seq=seq, Stream_Closed=closed,
        Producer_Id=producer_id, Producer_Epoch=epoch, Producer_Seq=producer_seq,
    )
    assert_clear_answer(send(ds, "POST", url(path), headers=headers, content=body))


@FUZZ
@given(path=paths, offset=optional, live=st.one_of(st.none(), st.sampled_from(["long-poll", "sse"]), values),
       cursor=optional, etag=optional, method=st.sampled_from(["GET", "HEAD", "GET", "DELETE", "OPTIONS", "PATCH"]))
@example(path="fuzz/text", offset="１", live=None, cursor=None, etag=None, method="GET")
@example(path="fuzz/json", offset="-1", live="sse", cursor="٣", etag=None, method="GET")
def test_read(ds, path, offset, live, cursor, etag, method):
    params = {name: value for name, value in (("offset", offset), ("live", live), ("cursor", cursor)) if value is not None}
    headers = headers_of(If_None_Match=etag)
    if method == "DELETE" and path in PATHS:
        method = "GET"  # The shared streams stay for the other properties.
    assert_clear_answer(send(ds, method, url(path), params=params, headers=headers))


def test_no_slot_is_left_behind(ds):
    """Run after the properties: every live read they made has given its slot back."""
    deadline = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()

    def all_slots_free() -> bool:
        streams = [ds.stream("GET", f"{DS}/fuzz/text", params={"offset": "-1", "live": "sse"}) for _ in range(SLOTS)]
        responses = [stream.__enter__() for stream in streams]
        try:
            return all(response.status_code == 200 for response in responses)
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)

    eventually_sync(all_slots_free, what=f"the user's {SLOTS} stream slots to be free (by {deadline})")
