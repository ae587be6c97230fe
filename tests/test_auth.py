"""Auth: bearer tokens (issue, use, expire, revoke), sessions with CSRF, and ownership of every object."""

import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.api import ApiClient, error_of, issue_token
from tests.support.client import ChatClient
from tests.support.server import ROOT, USERS
from tests.support.wait import eventually

PROMPT = "What makes an API easy to use from a phone?"


@pytest.fixture
def sqlite_server(start_server):
    return start_server("sqlite")


# --- Tokens ------------------------------------------------------------------------


async def test_token_flow_issue_use_revoke(sqlite_server):
    async with httpx.AsyncClient(base_url=sqlite_server.url) as http:
        response = await http.post("/api/auth/token", json={"username": "alice", "password": USERS["alice"], "name": "Pixel 8"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"token", "expires_at"} and body["expires_at"]
        bearer = {"Authorization": f"Bearer {body['token']}"}

        assert (await http.get("/api/conversations", headers=bearer)).status_code == 200
        created = await http.post("/api/conversations", json={"title": "no csrf needed"}, headers=bearer)
        assert created.status_code == 201, "a bearer request needs no CSRF token"

        assert (await http.delete("/api/auth/token", headers=bearer)).status_code == 204
        error = error_of(await http.get("/api/conversations", headers=bearer), 401)
        assert error["code"] == "invalid_token"
        error_of(await http.delete("/api/auth/token", headers=bearer), 401)


async def test_tokens_are_stored_hashed(sqlite_server):
    token = await issue_token(sqlite_server.url, "alice")
    database = sqlite_server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        rows = db.execute("select key_hash, prefix from chat_apitoken").fetchall()
    assert rows and all(token not in key_hash for key_hash, _ in rows)
    assert any(token.startswith(prefix) and len(prefix) < 16 for _, prefix in rows)
    dump = "\n".join(str(row) for row in rows)
    assert token not in dump


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "alice", "password": "wrong"}, 401, "invalid_credentials"),
        ({"username": "nobody", "password": "x"}, 401, "invalid_credentials"),
        ({"username": "alice"}, 400, "invalid"),
        ({"username": "", "password": "x"}, 400, "invalid"),
        ({"username": "alice", "password": "x", "admin": True}, 400, "invalid"),
    ],
)
async def test_token_refused(start_server, body, status, code):
    server = start_server("sqlite", CHAT_LOGIN_FAILURE_LIMIT="1000")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert error_of(await http.post("/api/auth/token", json=body), status)["code"] == code


async def test_tokens_expire(start_server):
    # About 3.5 s.
    server = start_server("sqlite", CHAT_API_TOKEN_TTL_DAYS="0.00004")
    async with httpx.AsyncClient(base_url=server.url) as http:
        issued = await http.post("/api/auth/token", json={"username": "alice", "password": USERS["alice"]})
        expires_at = datetime.fromisoformat(issued.json()["expires_at"])
        http.headers["Authorization"] = f"Bearer {issued.json()['token']}"
        fresh = await http.get("/api/conversations")
        # Judged by the clock, not by how fast this machine is: answered before the expiry, it was valid.
        if datetime.now(UTC) < expires_at:
            assert fresh.status_code == 200, fresh.text
        expired = await eventually(lambda: http.get("/api/conversations"), until=lambda r: r.status_code != 200)
        assert datetime.now(UTC) >= expires_at, "refused before it expired"
        assert error_of(expired, 401)["code"] == "invalid_token"


async def test_management_command_issues_a_token(sqlite_server):
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "bob", "--name", "cli", "--days", "1"],
        cwd=ROOT,
        env=sqlite_server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = result.stdout.strip()
    assert token.startswith("chat_") and "expires" in result.stderr
    client = ApiClient(sqlite_server.url, token)
    try:
        assert (await client.request("GET", "/api/conversations")).status_code == 200
    finally:
        await client.aclose()
    missing = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "nobody"], cwd=ROOT, env=sqlite_server.env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "No user 'nobody'" in missing.stderr


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer nonsense", "Bearer chat_" + "A" * 43, "bearer  chat_x y", "Bearer " + "x" * 5000]
)
async def test_bad_bearer_tokens(sqlite_server, header):
    async with httpx.AsyncClient(base_url=sqlite_server.url) as http:
        error = error_of(await http.get("/api/conversations", headers={"Authorization": header}), 401)
        assert error["code"] in ("invalid_token", "unauthenticated")


async def test_a_bad_bearer_token_is_not_rescued_by_a_session(sqlite_server):
    async with ChatClient(sqlite_server.url) as browser:
        await browser.login("alice", USERS["alice"])
        assert (await browser.http.get("/api/conversations")).status_code == 200
        response = await browser.http.get("/api/conversations", headers={"Authorization": "Bearer revoked-or-wrong"})
        assert error_of(response, 401)["code"] == "invalid_token"


async def test_unauthenticated_requests(sqlite_server):
    async with httpx.AsyncClient(base_url=sqlite_server.url) as http:
        for method, path in [
            ("GET", "/api/conversations"),
            ("POST", "/api/conversations"),
            ("GET", f"/api/generations/{uuid.uuid4()}"),
            ("GET", f"/api/generations/{uuid.uuid4()}/stream"),
            ("DELETE", "/api/auth/token"),
            ("GET", "/api/events/"),
        ]:
            assert error_of(await http.request(method, path, json={}), 401)["code"] == "unauthenticated"


async def test_revoking_needs_a_bearer_token(sqlite_server):
    async with ChatClient(sqlite_server.url) as browser:
        await browser.login("alice", USERS["alice"])
        response = await browser.http.delete("/api/auth/token", headers=browser.csrf)
        assert error_of(response, 400)["code"] == "no_bearer_token"


# --- Sessions and CSRF -------------------------------------------------------------------


async def test_session_requests_need_csrf_on_unsafe_methods(sqlite_server):
    async with ChatClient(sqlite_server.url) as browser:
        await browser.login("alice", USERS["alice"])
        assert (await browser.http.get("/api/conversations")).status_code == 200, "safe methods need no token"
        conversation = await browser.new_conversation("csrf")
        path = f"/api/conversations/{conversation}"
        for method, url, body in [
            ("POST", "/api/conversations", {"title": "x"}),
            ("POST", f"{path}/messages", {"content": PROMPT}),
            ("PATCH", path, {"title": "y"}),
            ("DELETE", path, None),
        ]:
            refused = await browser.http.request(method, url, json=body)
            assert error_of(refused, 403)["code"] == "csrf_failed", (method, url)
            wrong = await browser.http.request(method, url, json=body, headers={"X-CSRFToken": "x" * 32})
            assert wrong.status_code == 403
        assert (await browser.http.get(f"{path}/messages")).json()["items"] == [], "nothing was posted"
        assert (await browser.http.patch(path, json={"title": "ok"}, headers=browser.csrf)).status_code == 200
        assert (await browser.http.delete(path, headers=browser.csrf)).status_code == 204


# --- Ownership: another user's object is a 404, on every endpoint --------------------------


@pytest.fixture
async def alices_objects(alice_api):
    conversation = await alice_api.new_conversation("alice's secrets")
    answer = (await alice_api.post_message(conversation["id"], PROMPT, stream=False)).json()
    return conversation, answer["generation"]


async def test_every_endpoint_hides_other_users_objects(alice_api, bob_api, alices_objects, server):
    conversation, generation = alices_objects
    c, g = conversation["id"], generation["id"]
    before = (await alice_api.request("GET", f"/api/conversations/{c}")).json()
    attempts = [
        ("GET", "/api/conversations/{c}", None),
        ("PATCH", "/api/conversations/{c}", {"title": "pwned"}),
        ("DELETE", "/api/conversations/{c}", None),
        ("GET", "/api/conversations/{c}/messages", None),
        ("POST", "/api/conversations/{c}/messages", {"content": "hi", "stream": True}),
        ("POST", "/api/conversations/{c}/messages", {"content": "hi", "stream": False}),
        ("GET", "/api/generations/{g}", None),
        ("POST", "/api/generations/{g}/cancel", None),
        ("POST", "/api/generations/{g}/regenerate", {}),
        ("GET", "/api/generations/{g}/stream", None),
    ]
    for method, template, body in attempts:
        response = await bob_api.request(method, template.format(c=c, g=g), json=body)
        assert error_of(response, 404)["code"] == "not_found", (method, template)
        # Exactly as for an object that does not exist: nothing tells bob that it does.
        missing = await bob_api.request(method, template.format(c=2**40, g=uuid.uuid4()), json=body)
        assert (missing.status_code, missing.json()) == (404, response.json())
    # And for the POST that would answer with the stream itself.
    streamed = await bob_api.request(
        "POST", f"/api/conversations/{c}/messages", json={"content": "hi"}, headers={"Accept": "text/event-stream"}
    )
    assert error_of(streamed, 404)["code"] == "not_found"
    listed = (await bob_api.request("GET", "/api/conversations", params={"limit": 100})).json()["items"]
    assert c not in [item["id"] for item in listed]
    # Over a session too, including the stream.
    async with ChatClient(server.url) as bob_browser:
        await bob_browser.login("bob", USERS["bob"])
        error_of(await bob_browser.http.get(f"/api/generations/{g}/stream"), 404)
        error_of(await bob_browser.http.get(f"/api/conversations/{c}/messages"), 404)
    # Nothing of alice's changed.
    assert (await alice_api.request("GET", f"/api/conversations/{c}")).json() == before
    messages = (await alice_api.request("GET", f"/api/conversations/{c}/messages")).json()["items"]
    assert len(messages) == 2
    assert (await alice_api.generation(g))["status"] == "complete"
