"""Durable Streams under hostile input (issue 27): per-user quotas, bounded appends, and no 5xx from any header or body.

Each regression test is named after what broke. The PostgreSQL ones ran into
its column limits (DataError), which SQLite does not enforce.
"""

import asyncio
import json
import uuid

import httpx
import pytest

from tests.durable.ds_support import DS
from tests.support.api import issue_token
from tests.support.server import TEST_ENV, manage, query

QUOTAS = {
    "DURABLE_MAX_STREAMS_PER_USER": "3",
    "DURABLE_MAX_BYTES_PER_USER": "1000",
    "DURABLE_MAX_MESSAGES_PER_APPEND": "10",
    "DURABLE_MAX_JSON_DEPTH": "8",
}


def new_path() -> str:
    return f"{DS}/limits/{uuid.uuid4().hex}"


@pytest.fixture(params=["sqlite", "postgres"])
async def alice(request, start_server):
    """Alice with a bearer token on a server of each backend."""
    server = start_server(request.param)
    token = await issue_token(server.url, "alice")
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        http.server = server
        yield http


async def json_stream(http) -> str:
    path = new_path()
    assert (await http.put(path, headers={"Content-Type": "application/json"})).status_code == 201
    return path


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


async def test_json_nested_100000_deep_is_a_400(alice):
    """A JSON body nested 100,000 deep was a 500 (RecursionError in the parser)."""
    path = await json_stream(alice)
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        assert_refused(await alice.post(path, headers={"Content-Type": "application/json"}, content=body), 400, "json_too_deep")
    # Brackets inside strings are text, not nesting.
    deep_text = json.dumps({"text": "[" * 10_000}).encode()
    assert (await alice.post(path, headers={"Content-Type": "application/json"}, content=deep_text)).status_code == 204
    assert (await alice.get(path)).json() == [{"text": "[" * 10_000}]


async def test_lone_surrogate_in_a_json_stream_is_a_400(alice):
    """`"\\ud800"` in a JSON append was a 500 (UnicodeEncodeError storing it)."""
    path = await json_stream(alice)
    for body in (b'"\\ud800"', b'["ok", {"k": "\\udfff"}]', b'{"\\ud800": 1}'):
        assert_refused(await alice.post(path, headers={"Content-Type": "application/json"}, content=body), 400, "invalid_json")
    pair = b'"\\ud83d\\ude00"'  # A pair is one character, and fine.
    assert (await alice.post(path, headers={"Content-Type": "application/json"}, content=pair)).status_code == 204
    assert (await alice.get(path)).json() == ["\U0001f600"]


async def test_nan_is_refused_in_json_streams(alice):
    """NaN and Infinity were accepted and served in JSON streams: they are not JSON."""
    path = await json_stream(alice)
    for body in (b"NaN", b"[1, Infinity]", b'{"x": -Infinity}'):
        assert_refused(await alice.post(path, headers={"Content-Type": "application/json"}, content=body), 400, "invalid_json")
    assert (await alice.get(path)).json() == []


async def test_unicode_digits_are_refused_as_offsets(alice):
    """`offset=１` (and other non-ASCII digits) was read as offset 1."""
    path = new_path()
    await alice.put(path, headers={"Content-Type": "text/plain"}, content=b"abc")
    for value in ("１", "٠", "0000000000000001".replace("1", "١"), "²"):
        assert_refused(await alice.get(path, params={"offset": value}), 400, "invalid_offset")
    for cursor in ("１２", "٣"):  # An odd cursor is ignored, not read.
        response = await alice.get(path, params={"offset": "-1", "live": "long-poll", "cursor": cursor})
        assert response.status_code == 200 and response.headers["Stream-Cursor"].isascii()


async def test_stream_expires_at_overflow_is_a_400(alice):
    """`Stream-Expires-At: 9999-12-31T23:59:59-14:00` was a 500 (OverflowError converting it to UTC)."""
    for value in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        response = await alice.put(new_path(), headers={"Content-Type": "text/plain", "Stream-Expires-At": value})
        assert_refused(response, 400, "invalid_expires_at")
    response = await alice.put(new_path(), headers={"Content-Type": "text/plain", "Stream-Expires-At": "9999-12-31T23:59:59+00:00"})
    assert response.status_code == 201


async def test_stream_ttl_2147483648_is_a_400(alice):
    """`Stream-TTL: 2147483648` was a 500 on PostgreSQL (the column is a 32-bit integer)."""
    assert_refused(await alice.put(new_path(), headers={"Stream-TTL": "2147483648"}), 400, "invalid_ttl")
    assert_refused(await alice.put(new_path(), headers={"Stream-TTL": "9999999999"}), 400, "invalid_ttl")
    path = new_path()
    assert (await alice.put(path, headers={"Stream-TTL": "2147483647"})).status_code == 201
    assert (await alice.head(path)).headers["Stream-TTL"] == "2147483647"


async def test_content_type_over_255_characters_is_a_400(alice):
    """A Content-Type over 255 characters was a 500 on PostgreSQL (DataError storing it)."""
    long_type = "text/plain; x=" + "a" * 300
    assert_refused(await alice.put(new_path(), headers={"Content-Type": long_type}), 400, "invalid_content_type")


async def test_stream_seq_over_255_characters_is_a_400(alice):
    """A Stream-Seq over 255 characters was a 500 on PostgreSQL (DataError storing it)."""
    path = new_path()
    await alice.put(path, headers={"Content-Type": "text/plain"})
    response = await alice.post(path, headers={"Content-Type": "text/plain", "Stream-Seq": "s" * 256}, content=b"x")
    assert_refused(response, 400, "invalid_stream_seq")
    response = await alice.post(path, headers={"Content-Type": "text/plain", "Stream-Seq": "s" * 255}, content=b"x")
    assert response.status_code == 204


# --- Quotas and bounds, with small limits ------------------------------------------------------


@pytest.fixture
async def limited(start_server):
    """Alice and Bob on a server with tiny quotas."""
    server = start_server("sqlite", fresh=True, **QUOTAS)
    clients = []
    for name in ("alice", "bob"):
        token = await issue_token(server.url, name)
        clients.append(httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60))
    yield server, *clients
    for client in clients:
        await client.aclose()


async def test_stream_count_has_a_per_user_quota(limited):
    """One user made 2,000 streams in 10 s: there was no per-user limit."""
    server, alice, bob = limited
    paths = [new_path() for _ in range(3)]
    for path in paths:
        assert (await alice.put(path)).status_code == 201
    assert (await alice.put(paths[0])).status_code == 200, "an existing stream is not a new one"
    assert_refused(await alice.put(new_path()), 403, "too_many_streams")
    assert (await bob.put(new_path())).status_code == 201, "another user's quota is their own"
    assert (await alice.delete(paths[0])).status_code == 204
    assert (await alice.put(new_path())).status_code == 201, "a deleted stream frees its place"


async def test_stored_bytes_have_a_per_user_quota(limited):
    """One user wrote 300 MiB in 9 s: there was no per-user limit on stored bytes."""
    server, alice, bob = limited
    first, second = new_path(), new_path()
    assert (await alice.put(first, headers={"Content-Type": "text/plain"}, content=b"a" * 600)).status_code == 201
    assert (await alice.put(second, headers={"Content-Type": "text/plain"})).status_code == 201
    assert (await alice.post(second, headers={"Content-Type": "text/plain"}, content=b"b" * 400)).status_code == 204
    response = await alice.post(second, headers={"Content-Type": "text/plain"}, content=b"c")
    assert_refused(response, 413, "storage_quota_exceeded")
    assert_refused(await alice.put(new_path(), headers={"Content-Type": "text/plain"}, content=b"d"), 413, "storage_quota_exceeded")
    assert (await alice.get(second)).content == b"b" * 400, "a refused append adds nothing"
    assert (await bob.put(new_path(), headers={"Content-Type": "text/plain"}, content=b"e" * 900)).status_code == 201
    assert (await alice.delete(first)).status_code == 204
    assert (await alice.post(second, headers={"Content-Type": "text/plain"}, content=b"f" * 600)).status_code == 204


async def test_one_append_of_524000_messages_is_refused(limited):
    """A 1 MiB JSON array of zeros became 524,000 rows; its insert stalled every other user for 14 s on SQLite."""
    server, alice, bob = limited
    path = await json_stream(alice)
    response = await alice.post(path, headers={"Content-Type": "application/json"}, content=json.dumps([0] * 11).encode())
    assert_refused(response, 413, "too_many_messages")
    assert (await alice.post(path, headers={"Content-Type": "application/json"}, content=json.dumps([0] * 10).encode())).status_code == 204
    assert (await alice.get(path)).json() == [0] * 10
    deep = json.dumps([[[[[[[[0]]]]]]]]).encode()  # 8 levels: the limit.
    assert (await alice.post(path, headers={"Content-Type": "application/json"}, content=deep)).status_code == 204
    assert_refused(await alice.post(path, headers={"Content-Type": "application/json"}, content=b"[" + deep + b"]"), 400, "json_too_deep")


async def test_unhandled_errors_are_logged_with_method_and_path(start_server):
    """With DEBUG=0 a 500 left no traceback anywhere; now each is logged with its method and path, never a body or token."""
    server = start_server("sqlite", fresh=True)
    token = await issue_token(server.url, "alice")
    query(server.database_url, "DROP TABLE durable_stream")  # Every stream request now fails in the database.
    secret_body = b"body-that-must-not-be-logged"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        path = new_path()
        response = await http.put(path, headers={"Authorization": f"Bearer {token}"}, content=secret_body)
    assert response.status_code == 500
    log = server.log()
    assert "Traceback" in log and "no such table: durable_stream" in log
    assert f"PUT Internal Server Error: {path}" in log
    assert token not in log and secret_body.decode() not in log


async def test_retention_frees_the_bytes_it_drops(limited):
    """Messages dropped by retention no longer count toward their owner's byte quota."""
    server, alice, bob = limited
    path = new_path()
    assert (await alice.put(path, headers={"Content-Type": "text/plain"}, content=b"a" * 900)).status_code == 201
    assert_refused(await alice.post(path, headers={"Content-Type": "text/plain"}, content=b"b" * 200), 413, "storage_quota_exceeded")
    env = {**TEST_ENV, "DATABASE_URL": server.database_url, "DURABLE_RETENTION_DAYS": "1e-9"}
    await asyncio.to_thread(manage, "prune_durable_streams", env=env)
    assert (await alice.post(path, headers={"Content-Type": "text/plain"}, content=b"b" * 200)).status_code == 204
    (row,) = query(server.database_url, "SELECT stored_bytes FROM durable_stream WHERE path = %s", path.removeprefix(f"{DS}/"))
    assert row["stored_bytes"] == 200
