"""Bearer tokens: a user lists and revokes their own, and a password change revokes them all (issue 27)."""

import re

import httpx
import pytest

from tests.support.api import issue_token
from tests.support.client import ChatClient
from tests.support.operator import operator_client
from tests.support.server import TEST_ENV, USERS, manage, query

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
NEW_PASSWORD = "a-new-long-password-4821"


def bearer(server, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
def server(start_server):
    """A server of its own: these tests change alice's password and revoke her tokens."""
    return start_server("sqlite", fresh=True)


async def works(server, token: str) -> bool:
    async with bearer(server, token) as http:
        status = (await http.get("/api/conversations")).status_code
    assert status in (200, 401), status
    return status == 200


async def test_tokens_can_be_listed_and_revoked(server):
    """A user could not see their tokens, nor revoke one but the one in hand."""
    phone = await issue_token(server.url, "alice", name="phone")
    laptop = await issue_token(server.url, "alice", name="laptop")
    bobs = await issue_token(server.url, "bob", name="bob's")
    async with bearer(server, phone) as http:
        listed = (await http.get("/api/auth/tokens")).json()
        assert [(t["name"], t["current"]) for t in listed] == [("laptop", False), ("phone", True)]
        assert all(t["prefix"] and t["created_at"] and t["last_used_at"] for t in listed if t["current"])
        assert phone not in str(listed) and laptop not in str(listed), "a key is never shown again"
        laptop_id = next(t["id"] for t in listed if t["name"] == "laptop")

        async with bearer(server, bobs) as bob:
            bobs_id = (await bob.get("/api/auth/tokens")).json()[0]["id"]
            assert (await bob.delete(f"/api/auth/tokens/{laptop_id}")).status_code == 404, "not his"
        assert (await http.delete(f"/api/auth/tokens/{bobs_id}")).status_code == 404
        assert await works(server, laptop) and await works(server, bobs)

        assert (await http.delete(f"/api/auth/tokens/{laptop_id}")).status_code == 204
        assert not await works(server, laptop)
        assert (await http.delete(f"/api/auth/tokens/{laptop_id}")).status_code == 404, "already revoked"
        assert [t["name"] for t in (await http.get("/api/auth/tokens")).json()] == ["phone"]

    browser = await ChatClient(server.url).login("alice", USERS["alice"])
    assert [t["name"] for t in (await browser.http.get("/api/auth/tokens")).json()] == ["phone"]
    assert (await browser.http.delete("/api/auth/tokens")).status_code == 403, "a session needs its CSRF token"
    assert (await browser.http.delete("/api/auth/tokens", headers=browser.csrf)).status_code == 204
    assert not await works(server, phone)
    assert await works(server, bobs)
    assert (await browser.http.get("/api/auth/tokens")).json() == []


async def change_in_the_admin(server):
    operator = await operator_client(server)
    alice_id = re.search(r'href="/admin/auth/user/(\d+)/change/">alice<', (await operator.http.get("/admin/auth/user/")).text)[1]
    form = await operator.http.get(f"/admin/auth/user/{alice_id}/password/")
    response = await operator.http.post(
        f"/admin/auth/user/{alice_id}/password/",
        data={
            "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true",
            "csrfmiddlewaretoken": CSRF_INPUT.search(form.text)[1],
        },
    )
    assert response.status_code == 302, response.text[:2000]


async def change_on_the_password_page(server):
    browser = await ChatClient(server.url).login("alice", USERS["alice"])
    form = await browser.http.get("/accounts/password_change/")
    response = await browser.http.post(
        "/accounts/password_change/",
        data={
            "old_password": USERS["alice"], "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD,
            "csrfmiddlewaretoken": CSRF_INPUT.search(form.text)[1],
        },
    )
    assert response.status_code == 302, response.text[:2000]
    assert (await browser.http.get("/api/auth/tokens")).status_code == 200, "the session that changed it stays"


async def change_with_set_password(server):
    code = f"u = User.objects.get(username='alice'); u.set_password({NEW_PASSWORD!r}); u.save()"
    manage("shell", "-c", f"from django.contrib.auth.models import User\n{code}", env={**TEST_ENV, "DATABASE_URL": server.database_url})


@pytest.mark.parametrize("change", [change_in_the_admin, change_on_the_password_page, change_with_set_password])
async def test_password_change_revokes_bearer_tokens_and_sessions(server, change):
    """Bearer tokens (and other sessions) survived a password change."""
    tokens = [await issue_token(server.url, "alice", name=name) for name in ("phone", "tablet")]
    bobs = await issue_token(server.url, "bob")
    other_session = await ChatClient(server.url).login("alice", USERS["alice"])
    assert (await other_session.http.get("/api/auth/tokens")).status_code == 200

    await change(server)

    for token in tokens:
        assert not await works(server, token)
    assert (await other_session.http.get("/api/auth/tokens")).status_code == 401
    assert await works(server, bobs), "another user's tokens stay"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        fresh = await http.post("/api/auth/token", json={"username": "alice", "password": NEW_PASSWORD})
    assert fresh.status_code == 201 and await works(server, fresh.json()["token"])


async def test_rehashing_a_password_keeps_the_tokens(server):
    """Only a new password revokes: Django's rehash of the same password on login (a hasher upgrade) does not."""
    token = await issue_token(server.url, "alice")
    code = (
        "from django.contrib.auth.models import User\n"
        "from django.contrib.auth.hashers import make_password\n"
        # An older hasher's hash of the same password: the next login rehashes it.
        f"User.objects.filter(username='alice').update(password=make_password({USERS['alice']!r}, hasher='pbkdf2_sha1'))"
    )
    manage("shell", "-c", code, env={**TEST_ENV, "DATABASE_URL": server.database_url})
    await issue_token(server.url, "alice")  # A login: the hash is upgraded and saved.
    (row,) = query(server.database_url, "SELECT password FROM auth_user WHERE username = 'alice'")
    assert row["password"].startswith("pbkdf2_sha256$"), "the login rehashed it"
    assert await works(server, token)
