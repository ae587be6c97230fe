"""The mobile REST API over a real socket, as a bearer-token client sees it."""

import asyncio
import json
import re

import httpx
import pytest

from tests.support.api import ApiClient, api_client, error_of

PROMPT = "How should a phone app retry a failed upload?"
SLOW = {"CHAT_SIMULATED_TOKENS_PER_S": "15"}


@pytest.fixture
async def slow_api(start_server):
    """Alice on a server whose answers take seconds, for cancel and delete."""
    server = start_server("sqlite", **SLOW)
    async with api_client(server.url, "alice") as client:
        yield client


# --- Conversations ------------------------------------------------------------------


async def test_conversation_create_read_rename_delete(alice_api: ApiClient):
    untitled = await alice_api.new_conversation("")
    assert untitled["title"] == ""
    created = await alice_api.new_conversation("  Trip\n plans  ")
    assert created["title"] == "Trip plans", "titles are one line"
    path = f"/api/conversations/{created['id']}"

    read = await alice_api.request("GET", path)
    assert read.status_code == 200 and read.json() == created

    renamed = await alice_api.request("PATCH", path, json={"title": "Japan in May"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Japan in May"
    assert renamed.json()["updated_at"] >= created["updated_at"]

    deleted = await alice_api.request("DELETE", path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert error_of(await alice_api.request("GET", path), 404)["code"] == "not_found"
    listed = (await alice_api.request("GET", "/api/conversations", params={"limit": 100})).json()["items"]
    assert created["id"] not in [c["id"] for c in listed] and untitled["id"] in [c["id"] for c in listed]
    error_of(await alice_api.request("DELETE", path), 404)


async def test_conversation_list_pages_newest_first(server):
    async with api_client(server.url, "alice") as fresh_user_view:
        created = [await fresh_user_view.new_conversation(f"page test {n}") for n in range(7)]
        pages, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            body = (await fresh_user_view.request("GET", "/api/conversations", params=params)).json()
            pages.append(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        seen = [c["id"] for page in pages for c in page]
        assert len(seen) == len(set(seen)), "no conversation twice"
        assert all(len(page) <= 3 for page in pages)
        keys = [(c["updated_at"], c["id"]) for page in pages for c in page]
        assert keys == sorted(keys, reverse=True), "most recently active first"
        ours = [c["id"] for c in created]
        assert [i for i in seen if i in ours] == list(reversed(ours))

        # A new message moves a conversation to the top.
        await fresh_user_view.ask(PROMPT, conversation_id=created[0]["id"])
        top = (await fresh_user_view.request("GET", "/api/conversations", params={"limit": 1})).json()
        assert top["items"][0]["id"] == created[0]["id"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJjIl0"}, "cursor"),  # base64 of ["c"]: too short
        ({"cursor": "WyJjIiwgIm5vdCBhIGRhdGUiLCAxXQ"}, "cursor"),  # ["c", "not a date", 1]
        ({"cursor": "WyJjIiwgIjIwMjUtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCAxZTEwMF0"}, "cursor"),  # an id that is no int
    ],
)
async def test_conversation_list_bad_parameters(alice_api, params, field):
    assert error_of(await alice_api.request("GET", "/api/conversations", params=params), 400)["field"] == field


# --- Messages ------------------------------------------------------------------------


async def test_messages_list_pages_both_ways_and_names_generations(alice_api):
    conversation = await alice_api.new_conversation("history")
    generations = []
    for n in range(3):
        response = await alice_api.post_message(conversation["id"], f"Question {n} about caching", stream=False)
        assert response.status_code == 200, response.text
        generations.append(response.json()["generation"])
    path = f"/api/conversations/{conversation['id']}/messages"

    async def all_pages(order: str) -> list[dict]:
        items, cursor = [], None
        while True:
            params = {"limit": 4, "order": order, **({"cursor": cursor} if cursor else {})}
            body = (await alice_api.request("GET", path, params=params)).json()
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items

    ascending = await all_pages("asc")
    assert [m["role"] for m in ascending] == ["user", "assistant"] * 3
    assert [m["id"] for m in ascending] == sorted(m["id"] for m in ascending)
    assert [m["id"] for m in await all_pages("desc")] == [m["id"] for m in reversed(ascending)]
    for user, assistant, generation in zip(ascending[::2], ascending[1::2], generations):
        assert user["generation"] is None and user["reply_to"] is None
        assert assistant["reply_to"] == user["id"]
        assert assistant["content"] == generation["text"]
        # Without edits or regenerates, one branch: each message follows the one before it.
        assert user["parent_id"] == (None if user is ascending[0] else ascending[ascending.index(user) - 1]["id"])
        assert assistant["parent_id"] == user["id"]
        assert assistant["generation"] == {
            "id": generation["id"],
            "status": "complete",
            "model": "simulated-1",
            "response_format": "text",
            "reasoning_ms": 0,
            "stream_url": f"/api/generations/{generation['id']}/stream",
            "ws_url": f"/ws/generations/{generation['id']}/",
        }
    # A cursor belongs to its list and order.
    first = (await alice_api.request("GET", path, params={"limit": 1})).json()
    error_of(await alice_api.request("GET", path, params={"cursor": first["next_cursor"], "order": "desc"}), 400)
    error_of(await alice_api.request("GET", "/api/conversations", params={"cursor": first["next_cursor"]}), 400)


async def test_post_streaming_message_gives_stream_and_websocket_urls(alice_api):
    answer = await alice_api.ask(PROMPT)
    generation = answer["generation"]
    assert answer["message"]["role"] == "user" and answer["message"]["content"] == PROMPT
    assert generation["status"] in ("queued", "streaming")
    assert generation["stream_url"] == f"/api/generations/{generation['id']}/stream"
    assert generation["ws_url"] == f"/ws/generations/{generation['id']}/"
    read = await alice_api.read_stream(generation["id"])
    assert read.terminal.event == "done"
    stored = await alice_api.generation(generation["id"])
    assert stored["text"] == read.text != ""
    assert stored["last_seq"] == stored["token_count"] == int(read.terminal.id)
    assert stored["usage"]["completion_tokens"] == stored["token_count"]
    assert stored["timings"]["queued_ms"] >= 0 and stored["timings"]["total_ms"] >= stored["timings"]["queued_ms"]
    assert stored["finish_reason"] == "stop" and stored["json"] is None


async def test_non_streaming_fallback(alice_api):
    conversation = await alice_api.new_conversation()
    response = await alice_api.post_message(conversation["id"], PROMPT, stream=False)
    assert response.status_code == 200, response.text
    generation = response.json()["generation"]
    assert generation["status"] == "complete" and generation["text"]
    assert generation["text"] == (await alice_api.generation(generation["id"]))["text"]


# --- Generations ---------------------------------------------------------------------


async def test_cancel(slow_api):
    generation = (await slow_api.ask(PROMPT))["generation"]
    first = await slow_api.read_stream(generation["id"], max_events=2)
    response = await slow_api.request("POST", f"/api/generations/{generation['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    rest = await slow_api.read_stream(generation["id"], last_event_id=first.last_id)
    assert rest.terminal.event == "cancelled"
    again = await slow_api.request("POST", f"/api/generations/{generation['id']}/cancel")
    assert again.json()["status"] == "cancelled", "cancel is idempotent"


async def test_regenerate_keeps_the_old_answer(alice_api):
    conversation = await alice_api.new_conversation()
    old = (await alice_api.post_message(conversation["id"], PROMPT, stream=False)).json()["generation"]
    response = await alice_api.request("POST", f"/api/generations/{old['id']}/regenerate", json={})
    assert response.status_code == 201, response.text
    new = response.json()["generation"]
    assert new["id"] != old["id"]
    assert new["user_message_id"] == old["user_message_id"]
    assert new["assistant_message_id"] != old["assistant_message_id"]
    assert response.json()["message"]["id"] == old["user_message_id"]
    assert new["ws_url"] == f"/ws/generations/{new['id']}/"
    # Still running: regenerating it again is refused.
    running = await alice_api.request("POST", f"/api/generations/{new['id']}/regenerate", json={})
    if running.status_code != 201:  # It may already have finished on a fast machine.
        assert error_of(running, 409)["code"] == "generation_active"
    await alice_api.wait_terminal(new["id"])
    # Non-streaming regenerate; an empty body means the defaults.
    blocking = await alice_api.request("POST", f"/api/generations/{old['id']}/regenerate", json={"stream": False})
    assert blocking.status_code == 200 and blocking.json()["generation"]["status"] == "complete"
    messages = (await alice_api.request("GET", f"/api/conversations/{conversation['id']}/messages")).json()["items"]
    answers = [m for m in messages if m["role"] == "assistant"]
    assert len(answers) >= 3 and answers[0]["generation"]["id"] == old["id"] and answers[0]["content"] == old["text"]


async def test_delete_cancels_the_running_answer(slow_api):
    answer = await slow_api.ask(PROMPT)
    generation_id = answer["generation"]["id"]
    following = asyncio.Event()
    reader = asyncio.create_task(slow_api.read_stream(generation_id, first_event=following))
    await asyncio.wait_for(following.wait(), 30)
    response = await slow_api.request("DELETE", f"/api/conversations/{answer['message']['conversation_id']}")
    assert response.status_code == 204, response.text
    read = await asyncio.wait_for(reader, 30)
    assert read.terminal is not None and read.terminal.event == "cancelled", "an open stream ends, not hangs"
    error_of(await slow_api.request("GET", f"/api/generations/{generation_id}"), 404)
    error_of(await slow_api.request("GET", f"/api/generations/{generation_id}/stream"), 404)
    # The process is healthy afterwards: other answers still complete.
    later = await slow_api.ask("Another question about queues")
    assert (await slow_api.read_stream(later["generation"]["id"], max_events=3)).status_code == 200


# --- Errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "malformed_json", None),
        (b"[]", "invalid", None),
        (b'{"stream": true}', "invalid", "content"),
        (b'{"content": ""}', "invalid", "content"),
        (b'{"content": "   "}', "invalid", "content"),
        (b'{"content": 5}', "invalid", "content"),
        (b'{"content": "hi", "stream": "maybe"}', "invalid", "stream"),
        (b'{"content": "hi", "response_format": "xml"}', "invalid", "response_format"),
        (b'{"content": "hi", "contnet": "typo"}', "invalid", "contnet"),
    ],
)
async def test_bad_message_bodies(alice_api, body, code, field):
    conversation = await alice_api.new_conversation()
    response = await alice_api.request(
        "POST",
        f"/api/conversations/{conversation['id']}/messages",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == (code, field)
    messages = (await alice_api.request("GET", f"/api/conversations/{conversation['id']}/messages")).json()
    assert messages["items"] == [], "bad input creates nothing"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing-here", 404),
        ("GET", "/api/generations/not-a-uuid", 400),
        ("GET", "/api/generations/not-a-uuid/stream", 400),
        ("GET", "/api/conversations/99999999999999999999999", 400),
        ("GET", "/api/conversations/9223372036854775808", 400),
        ("GET", "/api/conversations/0", 400),
        ("GET", "/api/generations/9b2f6c1e-0d3a-4c58-8e7f-2a1b3c4d5e6f", 404),  # No such generation.
        ("PATCH", "/api/conversations/1", 400),
    ],
)
async def test_bad_paths_answer_in_the_error_shape(alice_api, method, path, status):
    error_of(await alice_api.request(method, path, content=b"{}"), status)


# --- OpenAPI and docs ------------------------------------------------------------------


async def test_openapi_and_docs_are_served_from_the_app(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = (await http.get("/api/openapi.json")).json()
        assert {"/api/conversations", "/api/auth/token", "/api/generations/{generation_id}/regenerate"} <= set(
            spec["paths"]
        )
        assert "/api/guide/protocol.md" in spec["info"]["description"]
        assert "/api/events/" in spec["info"]["description"]
        docs = await http.get("/api/docs")
        assert docs.status_code == 200
        assert not re.search(r"(src|href)=\"(https?:)?//", docs.text), "no asset from another host (no CDN)"
        assets = re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", docs.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
        for asset in assets:
            assert (await http.get(asset)).status_code == 200, asset
        assert '"validatorUrl": null' in docs.text, "Swagger UI must not call validator.swagger.io"
        for guide in ("protocol.md", "mobile.md"):
            response = await http.get(f"/api/guide/{guide}")
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
        error_of(await http.get("/api/guide/settings.py"), 404)


async def test_spec_documents_every_error_shape(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = (await http.get("/api/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = [code for code in operation["responses"] if code.startswith("4")]
            assert errors, f"{method.upper()} {path} documents no error"
            for code in errors:
                schema = json.dumps(operation["responses"][code])
                assert "ErrorOut" in schema, (method, path, code)


async def test_a_wrong_method_answers_in_the_error_shape(alice_api):
    response = await alice_api.request("PUT", "/api/conversations/1", json={"title": "x"})
    error = error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
