"""Login throttling (django-axes) on every login path, keyed by username and address together.

An attacker's failures lock out only the attacker's own (username, address)
pair: the user, from their own address, still logs in. Loopback has a whole
/8, so the tests play two machines by binding the client to 127.0.0.1 and
127.0.0.2.
"""

import asyncio
import re
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.support.operator import OPERATOR
from tests.support.server import TEST_ENV, USERS, LiveServer, manage

LIMIT = 3
THROTTLED = {"CHAT_LOGIN_FAILURE_LIMIT": str(LIMIT), "CHAT_LOGIN_COOLOFF_S": "3600"}
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@asynccontextmanager
async def client_from(server, address: str):
    """An HTTP client whose connections come from `address` (127.x.y.z, all loopback on Linux)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=30) as http:
        yield http


async def token_attempt(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/api/auth/token", json={"username": username, "password": password})


async def form_attempt(http: httpx.AsyncClient, path: str, username: str, password: str) -> httpx.Response:
    """A login form as a browser posts it: GET for the CSRF token, then POST."""
    page = await http.get(path)
    token = CSRF_INPUT.search(page.text).group(1)
    return await http.post(path, data={"username": username, "password": password, "csrfmiddlewaretoken": token})


def assert_locked(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text[:500]
    assert response.headers["Retry-After"] == "3600"


@pytest.fixture
def throttled(start_server):
    return start_server("sqlite", fresh=True, **THROTTLED)


async def test_token_endpoint_locks_the_pair_not_the_user(throttled):
    async with client_from(throttled, "127.0.0.2") as attacker, client_from(throttled, "127.0.0.1") as phone:
        statuses = [(await token_attempt(attacker, "bob", f"guess {n}")).status_code for n in range(LIMIT + 2)]
        assert statuses == [401] * (LIMIT - 1) + [429] * 3
        locked = await token_attempt(attacker, "bob", USERS["bob"])
        assert_locked(locked)
        assert locked.json() == {"error": {"code": "too_many_attempts", "message": locked.json()["error"]["message"], "field": None}}

        assert (await token_attempt(phone, "bob", USERS["bob"])).status_code == 201, "the user's own device"
        assert (await token_attempt(attacker, "alice", USERS["alice"])).status_code == 201, "another username"


async def test_a_success_resets_the_count(throttled):
    async with client_from(throttled, "127.0.0.1") as http:
        for _ in range(3):
            for n in range(LIMIT - 1):
                assert (await token_attempt(http, "alice", f"typo {n}")).status_code == 401
            assert (await token_attempt(http, "alice", USERS["alice"])).status_code == 201


async def test_session_login_is_throttled(throttled):
    async with client_from(throttled, "127.0.0.3") as attacker, client_from(throttled, "127.0.0.1") as browser:
        statuses = [(await form_attempt(attacker, "/accounts/login/", "alice", f"guess {n}")).status_code for n in range(LIMIT)]
        assert statuses == [200] * (LIMIT - 1) + [429], "the form again with its error, then locked"
        assert_locked(await form_attempt(attacker, "/accounts/login/", "alice", USERS["alice"]))

        response = await form_attempt(browser, "/accounts/login/", "alice", USERS["alice"])
        assert response.status_code == 302 and response.headers["location"] == "/"


async def test_admin_login_is_throttled(throttled):
    username, password = OPERATOR
    manage("create_demo_user", "--username", username, "--password", password, env={**TEST_ENV, "DATABASE_URL": throttled.database_url})
    async with client_from(throttled, "127.0.0.4") as attacker, client_from(throttled, "127.0.0.1") as operator:
        for n in range(LIMIT - 1):
            assert (await form_attempt(attacker, "/admin/login/", username, f"guess {n}")).status_code == 200
        assert_locked(await form_attempt(attacker, "/admin/login/", username, f"guess {LIMIT}"))
        assert_locked(await form_attempt(attacker, "/admin/login/", username, password))

        assert (await form_attempt(operator, "/admin/login/", username, password)).status_code == 302
        assert (await operator.get("/admin/")).status_code == 200


async def test_lockout_ends_after_the_cool_off(start_server):
    server = start_server("sqlite", fresh=True, CHAT_LOGIN_FAILURE_LIMIT="2", CHAT_LOGIN_COOLOFF_S="1")
    async with client_from(server, "127.0.0.1") as http:
        statuses = [(await token_attempt(http, "bob", "wrong")).status_code for _ in range(2)]
        assert statuses == [401, 429]
        deadline = asyncio.get_running_loop().time() + 10
        while (response := await token_attempt(http, "bob", USERS["bob"])).status_code == 429:
            assert asyncio.get_running_loop().time() < deadline, "still locked long after the cool-off"
            await asyncio.sleep(0.1)
        assert response.status_code == 201


async def test_lockout_is_shared_by_processes(throttled, tmp_path):
    """The failures are in the database: a second process on it refuses the pair too."""
    other = LiveServer(database_url=throttled.database_url, env=THROTTLED, workdir=tmp_path).start()
    try:
        async with client_from(throttled, "127.0.0.5") as first, client_from(other, "127.0.0.5") as second:
            for n in range(LIMIT - 1):
                assert (await token_attempt(first, "alice", f"guess {n}")).status_code == 401
            assert_locked(await token_attempt(second, "alice", "guess again"))
            assert_locked(await token_attempt(first, "alice", USERS["alice"]))
    finally:
        other.stop()
