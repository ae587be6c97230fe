"""Generations as durable streams, read over a real socket: raw HTTP and the Python `durable-streams` client."""

import httpx
import pytest
from durable_streams import astream

from tests.durable.ds_support import DS, TERMINAL_TYPES, generation_url, offset, rebuild
from tests.support.api import api_client


@pytest.fixture
def slow_server(start_server):
    """Answers that take a few seconds, so a reader starts while the generation runs."""
    return start_server("sqlite", CHAT_SIMULATED_TOKENS_PER_S=25, DURABLE_LONG_POLL_TIMEOUT_S=2)


@pytest.fixture
async def slow_alice(slow_server):
    async with api_client(slow_server.url, "alice") as client:
        yield client


def auth(client) -> dict:
    return {"Authorization": f"Bearer {client.token}"}


async def read_with_client(url: str, headers: dict, *, live, start: str = "-1", stop_after: int | None = None) -> list[dict]:
    """Messages from the Python client until the terminal one (or `stop_after` messages)."""
    messages = []
    async with astream(url, offset=start, live=live, headers=headers) as response:
        async for message in response.iter_json():
            messages.append(message)
            if message["type"] in TERMINAL_TYPES or (stop_after and len(messages) >= stop_after):
                break
    return messages


async def test_finished_generation_catch_up_read(alice_api, server):
    generation = (await alice_api.ask("hello"))["generation"]
    stored = await alice_api.wait_terminal(generation["id"])
    url = generation_url(server.url, generation["id"])
    response = await alice_api.http.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Stream-Closed"] == "true"
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Stream-Next-Offset"] == offset(stored["last_seq"], end=True)
    assert "max-age" in response.headers["Cache-Control"]
    text, end = rebuild(response.json())
    assert text == stored["text"]
    assert end == {"type": "done", "id": stored["last_seq"], "seq": stored["last_seq"], "status": "complete",
                   **{k: end[k] for k in end if k in ("finish_reason", "usage")}}
    again = await alice_api.http.get(url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    eof = await alice_api.http.get(url, params={"offset": response.headers["Stream-Next-Offset"]})
    assert eof.json() == [] and eof.headers["Stream-Closed"] == "true"


async def test_python_client_reads_finished_generation_and_resumes_mid_stream(alice_api, server):
    generation = (await alice_api.ask("hello"))["generation"]
    stored = await alice_api.wait_terminal(generation["id"])
    url = generation_url(server.url, generation["id"])
    messages = await read_with_client(url, auth(alice_api), live=False)
    assert rebuild(messages) == (stored["text"], messages[-1])
    assert messages[-1]["status"] == "complete"
    tokens = [m for m in messages if m["type"] == "token"]
    middle = tokens[len(tokens) // 2]
    before = "".join(m["text"] for m in tokens[: len(tokens) // 2 + 1])
    rest = await read_with_client(url, auth(alice_api), live="sse", start=offset(middle["id"]))
    assert before + rebuild(rest)[0] == stored["text"]
    assert all(m["id"] > middle["id"] for m in rest)


@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_python_client_follows_running_generation(slow_alice, slow_server, live):
    generation = (await slow_alice.ask("hello"))["generation"]
    url = generation_url(slow_server.url, generation["id"])
    assert (await slow_alice.generation(generation["id"]))["status"] in ("queued", "streaming")
    first = await read_with_client(url, auth(slow_alice), live=live, stop_after=3)
    resume_at = first[-1]["id"]
    rest = await read_with_client(url, auth(slow_alice), live=live, start=offset(resume_at))
    stored = await slow_alice.wait_terminal(generation["id"])
    text = rebuild(first)[0] + rebuild(rest)[0]
    assert text == stored["text"]
    assert rest[-1]["type"] == "done" and rest[-1]["seq"] == stored["last_seq"]


async def test_running_generation_is_not_cacheable_and_closes_at_its_end(slow_alice, slow_server):
    generation = (await slow_alice.ask("hello"))["generation"]
    url = generation_url(slow_server.url, generation["id"])
    head = await slow_alice.http.head(url)
    assert head.status_code == 200 and "Stream-Closed" not in head.headers
    running = await slow_alice.http.get(url)
    assert running.headers["Cache-Control"] == "no-store"
    stored = await slow_alice.wait_terminal(generation["id"])
    head = await slow_alice.http.head(url)
    assert head.headers["Stream-Closed"] == "true"
    assert head.headers["Stream-Next-Offset"] == offset(stored["last_seq"], end=True)


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
async def test_writes_to_a_generation_are_refused(alice_api, server, method):
    generation = (await alice_api.ask("hello"))["generation"]
    response = await alice_api.http.request(method, generation_url(server.url, generation["id"]), content=b"x",
                                            headers={"Content-Type": "application/json"})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


async def test_another_users_generation_is_not_found(alice_api, bob_api, server):
    generation = (await alice_api.ask("hello"))["generation"]
    url = generation_url(server.url, generation["id"])
    assert (await bob_api.http.get(url)).status_code == 404
    assert (await bob_api.http.head(url)).status_code == 404
    async with httpx.AsyncClient() as anonymous:
        unauthenticated = await anonymous.get(url)
    assert unauthenticated.status_code == 401
    assert (await alice_api.http.get(f"{server.url}{DS}/generations/not-a-uuid")).status_code == 404


async def test_bad_offsets_are_400(alice_api, server):
    generation = (await alice_api.ask("hello"))["generation"]
    stored = await alice_api.wait_terminal(generation["id"])
    url = generation_url(server.url, generation["id"])
    for bad in ["abc", "1,2", offset(stored["last_seq"] + 1), offset(stored["last_seq"] + 1, end=True), ""]:
        response = await alice_api.http.get(url, params={"offset": bad})
        assert response.status_code == 400, bad
    assert (await alice_api.http.get(url, params={"live": "sse"})).status_code == 400
