"""An operator in the admin of a live server: a staff login and the Generation actions, over HTTP."""

import html
import re

from tests.support.client import ChatClient
from tests.support.server import TEST_ENV, manage

OPERATOR = ("ops", "ops-password")
MESSAGE = re.compile(r'<li class="(success|warning|error|info)">(.*?)</li>', re.S)
STARTED = re.compile(r'(?:Retry|Continuation) <a href="[^"]+">([0-9a-f-]{36})</a>')


async def operator_client(server) -> ChatClient:
    """Log in as a staff user of the server's database (created on first use)."""
    username, password = OPERATOR
    manage(
        "create_demo_user", "--username", username, "--password", password,
        env={**TEST_ENV, "DATABASE_URL": server.database_url},
    )
    return await ChatClient(server.url).login(username, password)


async def admin_action(client: ChatClient, action: str, *generation_ids: str) -> list[tuple[str, str]]:
    """Run a changelist action on the generations; return the (level, text) messages the admin showed."""
    response = await client.post(
        "/admin/chat/generation/", data={"action": action, "_selected_action": list(generation_ids), "index": "0"}
    )
    assert response.status_code == 302, response.text[:2000]
    page = await client.http.get(response.headers["location"])
    return [(level, html.unescape(text)) for level, text in MESSAGE.findall(page.text)]


def started_id(messages: list[tuple[str, str]]) -> str:
    """The id of the generation a retry or continue action started."""
    for level, text in messages:
        if level == "success" and (found := STARTED.search(text)):
            return found.group(1)
    raise AssertionError(f"no generation started: {messages}")
