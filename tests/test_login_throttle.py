"""Login throttling (django-axes) on every login path, keyed by username and address together.

An attacker's failures lock out only the attacker's own (username, address)
pair: the user, from their own address, still logs in. Loopback has a whole
/8, so the tests play two machines by binding the client to 127.0.0.1 and
127.0.0.2.
"""

import asyncio
import json
import re
import uuid
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


@pytest.fixture(params=["daphne", "uvicorn"])
def throttled_on(request, database_templates, tmp_path):
    """A throttled server of each kind: the bypass was found on uvicorn."""
    server = LiveServer(
        database_url=database_templates.fresh("sqlite"), env=THROTTLED, workdir=tmp_path, server=request.param
    ).start()
    yield server
    server.stop()


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


# --- Issue 27 ---------------------------------------------------------------------------------

# The same JSON text under form content types (refused: the API reads JSON) and under others (read as JSON).
FORM_TYPES = ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
READ_AS_JSON = ["text/plain", "application/json; charset=utf-8", None]


async def token_attempt_as(http: httpx.AsyncClient, content_type: str | None, username: str, password: str):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"username": username, "password": password})
    return await http.post("/api/auth/token", content=body, headers=headers)


async def test_login_throttle_bypass_with_multipart_json(throttled_on):
    """A multipart/form-data token request with a JSON body was a 500 that axes never counted, and the right password still won a token."""
    async with client_from(throttled_on, "127.0.0.7") as attacker:
        for content_type in FORM_TYPES:
            for password in ("wrong", USERS["bob"]):
                response = await token_attempt_as(attacker, content_type, "bob", password)
                assert response.status_code == 400, response.text
                # Daphne's HTTP parser (Twisted) refuses a malformed multipart body itself, with no body.
                if response.content or throttled_on.kind == "uvicorn":
                    assert response.json()["error"]["code"] == "malformed_body"
        statuses = []
        for n in range(LIMIT):
            content_type = READ_AS_JSON[n % len(READ_AS_JSON)]
            statuses.append((await token_attempt_as(attacker, content_type, "bob", f"guess {n}")).status_code)
        assert statuses == [401] * (LIMIT - 1) + [429], "every failure counts, whatever the content type"
        for content_type in FORM_TYPES + READ_AS_JSON:
            response = await token_attempt_as(attacker, content_type, "bob", USERS["bob"])
            assert response.status_code == (400 if content_type in FORM_TYPES else 429), (content_type, response.text)


ADDRESS_LIMIT = 5


async def test_login_spray_across_usernames_is_throttled_per_address(start_server):
    """Random usernames from one address were never throttled (lockout was per username and address): a CPU-exhaustion spray."""
    server = start_server(
        "sqlite", fresh=True, CHAT_LOGIN_FAILURE_LIMIT="3", CHAT_LOGIN_ADDRESS_FAILURE_LIMIT=str(ADDRESS_LIMIT),
        CHAT_LOGIN_COOLOFF_S="3600",
    )
    async with client_from(server, "127.0.0.8") as shared, client_from(server, "127.0.0.1") as home:
        # Alice has logged in from the shared address (an office, a carrier's NAT) before the spray.
        assert (await token_attempt(shared, "alice", USERS["alice"])).status_code == 201
        spray = [(await token_attempt(shared, f"nobody-{uuid.uuid4().hex[:8]}", "guess")).status_code for _ in range(ADDRESS_LIMIT + 3)]
        assert spray == [401] * (ADDRESS_LIMIT - 1) + [429] * 4
        assert_locked(await token_attempt(shared, "bob", USERS["bob"]))

        assert (await token_attempt(shared, "alice", USERS["alice"])).status_code == 201, "a username known at the address"
        assert (await token_attempt(home, "bob", USERS["bob"])).status_code == 201, "another address"
