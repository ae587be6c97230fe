"""The general namespace over a real socket: create, append, read in every mode, close, delete, ownership."""

import asyncio
import uuid

import httpx

from tests.durable.ds_support import DS
from tests.support.server import TEST_ENV, manage


def new_path() -> str:
    return f"{DS}/test/{uuid.uuid4().hex}"


async def test_create_append_read(ds_alice):
    path = new_path()
    created = await ds_alice.put(path, headers={"Content-Type": "text/plain"}, content=b"hello ")
    assert created.status_code == 201
    assert created.headers["Stream-Next-Offset"] == "0000000000000001"
    assert created.headers["Location"].endswith(path)
    appended = await ds_alice.post(path, headers={"Content-Type": "text/plain"}, content=b"world")
    assert appended.status_code == 204
    assert appended.headers["Stream-Next-Offset"] == "0000000000000002"
    read = await ds_alice.get(path)
    assert read.status_code == 200
    assert read.content == b"hello world"
    assert read.headers["Stream-Up-To-Date"] == "true"
    assert "Stream-Closed" not in read.headers
    rest = await ds_alice.get(path, params={"offset": "0000000000000001"})
    assert rest.content == b"world"



async def test_streams_belong_to_their_creator(ds_alice, ds_bob, ds_server):
    path = new_path()
    assert (await ds_alice.put(path, headers={"Content-Type": "text/plain"}, content=b"mine")).status_code == 201
    assert (await ds_bob.get(path)).status_code == 404
    assert (await ds_bob.head(path)).status_code == 404
    assert (await ds_bob.post(path, headers={"Content-Type": "text/plain"}, content=b"x")).status_code == 404
    assert (await ds_bob.delete(path)).status_code == 404
    # Paths are per user: bob's stream at the same path is his own, and alice's is untouched.
    assert (await ds_bob.put(path, headers={"Content-Type": "text/plain"}, content=b"his")).status_code == 201
    assert (await ds_alice.get(path)).content == b"mine"
    assert (await ds_bob.get(path)).content == b"his"


async def test_unauthenticated_requests_are_401(ds_server):
    async with httpx.AsyncClient(base_url=ds_server.url) as anonymous:
        response = await anonymous.put(new_path(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_long_poll_is_woken_by_an_append(ds_alice):
    path = new_path()
    created = await ds_alice.put(path, headers={"Content-Type": "application/json"}, content=b'[{"n":1}]')
    tail = created.headers["Stream-Next-Offset"]
    poll = asyncio.ensure_future(ds_alice.get(path, params={"offset": tail, "live": "long-poll"}))
    appended = await ds_alice.post(path, headers={"Content-Type": "application/json"}, content=b'[{"n":2},{"n":3}]')
    # Whether the poll was waiting when the append landed or arrived after it, it answers with the append.
    response = await poll
    assert response.status_code == 200
    assert response.json() == [{"n": 2}, {"n": 3}]
    assert response.headers["Stream-Next-Offset"] == appended.headers["Stream-Next-Offset"]
    assert response.headers["Stream-Cursor"].isdigit()


async def test_oversized_append_is_413(ds_alice):
    path = new_path()
    await ds_alice.put(path, headers={"Content-Type": "application/octet-stream"})
    response = await ds_alice.post(path, headers={"Content-Type": "application/octet-stream"}, content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413


async def test_close_then_read_to_eof(ds_alice):
    path = new_path()
    await ds_alice.put(path, headers={"Content-Type": "text/plain"}, content=b"a")
    closed = await ds_alice.post(path, headers={"Content-Type": "text/plain", "Stream-Closed": "true"}, content=b"b")
    assert closed.status_code == 204 and closed.headers["Stream-Closed"] == "true"
    read = await ds_alice.get(path)
    assert read.content == b"ab" and read.headers["Stream-Closed"] == "true"
    refused = await ds_alice.post(path, headers={"Content-Type": "text/plain"}, content=b"c")
    assert refused.status_code == 409 and refused.headers["Stream-Next-Offset"] == read.headers["Stream-Next-Offset"]
    sse = await ds_alice.get(path, params={"offset": read.headers["Stream-Next-Offset"], "live": "sse"})
    assert sse.text == 'event: control\ndata:{"streamNextOffset":"0000000000000002","streamClosed":true,"upToDate":true}\n\n'


async def test_retention_makes_pruned_offsets_410(ds_alice, ds_server):
    path = new_path()
    await ds_alice.put(path, headers={"Content-Type": "text/plain"}, content=b"old")
    tail = (await ds_alice.head(path)).headers["Stream-Next-Offset"]
    env = {**TEST_ENV, "DATABASE_URL": ds_server.database_url, "DURABLE_RETENTION_DAYS": "1e-9"}
    await asyncio.to_thread(manage, "prune_durable_streams", env=env)
    assert (await ds_alice.get(path, params={"offset": "-1"})).status_code == 410
    from_tail = await ds_alice.get(path, params={"offset": tail})
    assert from_tail.status_code == 200 and from_tail.content == b""
    await ds_alice.post(path, headers={"Content-Type": "text/plain"}, content=b"new")
    assert (await ds_alice.get(path, params={"offset": tail})).content == b"new"
