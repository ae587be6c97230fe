"""Every limit is a setting, and reaching one is a clear 4xx in the error shape."""

import asyncio
import json
import uuid

import httpx
import pytest

from tests.support.api import api_client, error_of

LIMITS = {
    "CHAT_MAX_PROMPT_CHARS": "100",
    "CHAT_MAX_BODY_BYTES": "2000",
    "CHAT_MAX_ACTIVE_GENERATIONS_PER_USER": "2",
    # Slow answers, so that two stay running while the test looks.
    "CHAT_SIMULATED_TOKENS_PER_S": "10",
}


@pytest.fixture
async def limited(start_server):
    server = start_server("sqlite", **LIMITS)
    async with api_client(server.url, "alice") as client:
        yield client


async def test_prompt_size(limited):
    conversation = await limited.new_conversation()
    error = error_of(await limited.post_message(conversation["id"], "x" * 101), 400)
    assert error["field"] == "content" and "limit is 100" in error["message"]
    ok = await limited.post_message(conversation["id"], "x" * 100, stream=True)
    assert ok.status_code == 201
    await limited.request("POST", f"/api/generations/{ok.json()['generation']['id']}/cancel")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_size(limited, chunked):
    conversation = await limited.new_conversation()
    body = json.dumps({"content": "short", "padding": "x" * 3000}).encode()

    async def stream():
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = await limited.http.post(
        f"/api/conversations/{conversation['id']}/messages",
        content=stream() if chunked else body,
        headers={"Content-Type": "application/json"},
    )
    error = error_of(response, 413)
    assert error["code"] == "body_too_large" and "2000 bytes" in error["message"]
    error_of(await limited.http.post("/api/conversations", content=body, headers={"Content-Type": "application/json"}), 413)
    async with httpx.AsyncClient(base_url=str(limited.http.base_url)) as anonymous:
        error_of(await anonymous.post("/api/auth/token", content=body, headers={"Content-Type": "application/json"}), 413)
    messages = await limited.request("GET", f"/api/conversations/{conversation['id']}/messages")
    assert messages.json()["items"] == []


async def test_running_generations_per_user(limited):
    one, two = await limited.new_conversation(), await limited.new_conversation()
    first = await limited.post_message(one["id"], "First question about queues", key="first-" + uuid.uuid4().hex)
    second = await limited.post_message(two["id"], "Second question about queues")
    assert first.status_code == second.status_code == 201
    refused = await limited.post_message(one["id"], "Third question about queues")
    error = error_of(refused, 429)
    assert error["code"] == "too_many_generations" and "limit is 2" in error["message"]
    assert refused.headers["Retry-After"]
    regenerate = await limited.request(
        "POST", f"/api/generations/{first.json()['generation']['id']}/regenerate", json={}
    )
    assert regenerate.status_code in (409, 429), "still running, and over the limit anyway"
    # A retry of an accepted request is not a new generation: it still gets its answer.
    retry = await limited.post_message(one["id"], "First question about queues", key=first.request.headers["Idempotency-Key"])
    assert retry.status_code == 201 and retry.json()["generation"]["id"] == first.json()["generation"]["id"]
    # The limit is per user: bob is not affected.
    async with api_client(str(limited.http.base_url), "bob") as bob:
        assert (await bob.post_message((await bob.new_conversation())["id"], "Bob's question")).status_code == 201
    # Cancelling one frees a slot.
    await limited.request("POST", f"/api/generations/{first.json()['generation']['id']}/cancel")
    third = await limited.post_message(one["id"], "Third question about queues")
    assert third.status_code == 201, third.text
    messages = (await limited.request("GET", f"/api/conversations/{one['id']}/messages")).json()["items"]
    assert len(messages) == 4, "the refused post created nothing"
    for generation in (second, third):
        await limited.request("POST", f"/api/generations/{generation.json()['generation']['id']}/cancel")


async def test_concurrent_posts_respect_the_limit(limited):
    conversations = [await limited.new_conversation() for _ in range(5)]
    responses = await asyncio.gather(
        *(limited.post_message(c["id"], f"Question {n} about limits") for n, c in enumerate(conversations))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 201, 429, 429, 429]
    for response in responses:
        if response.status_code == 201:
            await limited.request("POST", f"/api/generations/{response.json()['generation']['id']}/cancel")
