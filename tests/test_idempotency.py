"""Idempotency-Key: a retried POST returns what the first one created, and creates nothing."""

import asyncio
import uuid

import pytest

from tests.support.api import ApiClient

PROMPT = "How do I make a POST safe to retry?"


async def messages(client: ApiClient, conversation_id: int) -> list[dict]:
    response = await client.request("GET", f"/api/conversations/{conversation_id}/messages", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def ids(body: dict) -> tuple:
    return body["message"]["id"], body["generation"]["id"]


async def test_a_retry_returns_the_original_message_and_generation(alice_api):
    conversation = await alice_api.new_conversation()
    key = str(uuid.uuid4())
    first = await alice_api.post_message(conversation["id"], PROMPT, key=key)
    assert first.status_code == 201, first.text
    retry = await alice_api.post_message(conversation["id"], PROMPT, key=key)
    assert retry.status_code == 201
    assert ids(retry.json()) == ids(first.json())
    assert retry.json()["generation"]["stream_url"] == first.json()["generation"]["stream_url"]
    assert [m["role"] for m in await messages(alice_api, conversation["id"])] == ["user", "assistant"]
    # The defaults are part of the body: spelling them out is the same request.
    explicit = await alice_api.post_message(conversation["id"], PROMPT, key=key, stream=True, response_format="text")
    assert explicit.status_code == 201 and ids(explicit.json()) == ids(first.json())


async def test_a_non_streaming_retry_waits_for_the_same_answer(alice_api):
    conversation = await alice_api.new_conversation()
    key = str(uuid.uuid4())
    first, retry = await asyncio.gather(
        alice_api.post_message(conversation["id"], PROMPT, key=key, stream=False),
        alice_api.post_message(conversation["id"], PROMPT, key=key, stream=False),
    )
    assert first.status_code == retry.status_code == 200, (first.text, retry.text)
    assert ids(first.json()) == ids(retry.json())
    assert first.json()["generation"]["text"] == retry.json()["generation"]["text"] != ""
    assert len(await messages(alice_api, conversation["id"])) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"content": PROMPT + " (edited)"},
        {"content": PROMPT, "stream": False},
        {"content": PROMPT, "response_format": "json"},
    ],
)
async def test_the_same_key_with_another_body_is_a_conflict(alice_api, change):
    conversation = await alice_api.new_conversation()
    key = str(uuid.uuid4())
    assert (await alice_api.post_message(conversation["id"], PROMPT, key=key)).status_code == 201
    body = dict(change)
    conflict = await alice_api.post_message(conversation["id"], body.pop("content"), key=key, **body)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert conflict.json()["error"]["field"] == "Idempotency-Key"
    assert len(await messages(alice_api, conversation["id"])) == 2


async def test_the_same_key_in_another_conversation_is_a_conflict(alice_api):
    one, two = await alice_api.new_conversation(), await alice_api.new_conversation()
    key = str(uuid.uuid4())
    assert (await alice_api.post_message(one["id"], PROMPT, key=key)).status_code == 201
    assert (await alice_api.post_message(two["id"], PROMPT, key=key)).status_code == 409
    assert await messages(alice_api, two["id"]) == []


async def test_keys_are_scoped_per_user(alice_api, bob_api):
    key = "shared-key-" + uuid.uuid4().hex
    alice_conversation, bob_conversation = await alice_api.new_conversation(), await bob_api.new_conversation()
    alice = await alice_api.post_message(alice_conversation["id"], PROMPT, key=key)
    bob = await bob_api.post_message(bob_conversation["id"], PROMPT, key=key)
    assert alice.status_code == bob.status_code == 201
    assert ids(alice.json()) != ids(bob.json())
    # Bob's key does not reach into alice's conversation either.
    assert (await bob_api.post_message(alice_conversation["id"], PROMPT, key=key)).status_code == 404


async def test_concurrent_retries_create_exactly_one_of_each(alice_api, backend):
    """Eight identical requests at once (a client retrying over a flaky link), on SQLite and PostgreSQL."""
    conversation = await alice_api.new_conversation()
    key = str(uuid.uuid4())
    responses = await asyncio.gather(*(alice_api.post_message(conversation["id"], PROMPT, key=key) for _ in range(8)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({ids(r.json()) for r in responses}) == 1
    stored = await messages(alice_api, conversation["id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["generation"]["id"] == responses[0].json()["generation"]["id"]


async def test_concurrent_regenerate_retries_create_one_generation(alice_api, backend):
    conversation = await alice_api.new_conversation()
    old = (await alice_api.post_message(conversation["id"], PROMPT, stream=False)).json()["generation"]
    key = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(
            alice_api.request("POST", f"/api/generations/{old['id']}/regenerate", json={}, headers={"Idempotency-Key": key})
            for _ in range(6)
        )
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["generation"]["id"] for r in responses}) == 1
    assert len(await messages(alice_api, conversation["id"])) == 3


async def test_without_a_key_every_post_is_new(alice_api):
    conversation = await alice_api.new_conversation()
    first = await alice_api.post_message(conversation["id"], PROMPT)
    second = await alice_api.post_message(conversation["id"], PROMPT)
    assert ids(first.json()) != ids(second.json())


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve-ключ", "tab\there"])
async def test_invalid_keys(alice_api, key):
    conversation = await alice_api.new_conversation()
    response = await alice_api.http.post(
        f"/api/conversations/{conversation['id']}/messages",
        json={"content": PROMPT},
        headers=[("Idempotency-Key", key.encode())],
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert await messages(alice_api, conversation["id"]) == []
