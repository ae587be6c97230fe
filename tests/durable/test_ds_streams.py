"""The general namespace over a real socket: create, append, read in every mode, close, delete, ownership."""

import asyncio
import json
import uuid

from tests.durable.ds_support import DS


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

