"""The AI SDK's own Chat (what `useChat` wraps) in Chromium, against our server through the fault proxy.

A small page (tests/ai_sdk/browser_chat.js, bundled by esbuild from the pinned
`ai` package) logged in with the session and its CSRF header: the answer it
shows must be the stored one, also after the connection is cut mid-reasoning
and after a reload mid-answer (the chat restored from /messages, the running
answer resumed as `resume: true` does).
"""

import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.browser.chat_page import PROMPT, eventually
from tests.conftest import require_service
from tests.support.server import USERS

pytestmark = pytest.mark.timeout(90)

AI_SDK_DIR = Path(__file__).parent.parent / "ai_sdk"
ESBUILD = AI_SDK_DIR / "node_modules" / ".bin" / "esbuild"
PAGE = b"""<!doctype html>
<html lang="en"><meta charset="utf-8"><title>AI SDK chat</title>
<ul id="messages"></ul><p id="status"></p>
<form id="composer"><input id="prompt" aria-label="Message"><button>Send</button></form>
<button id="stop" type="button">Stop</button>
<script type="module" src="chat.js"></script>
</html>"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> bytes:
    require_service(shutil.which("node") is not None, "node is not installed")
    require_service(ESBUILD.exists(), "esbuild is not installed (make ai-sdk-deps)")
    out = tmp_path_factory.mktemp("ai-sdk-page") / "chat.js"
    subprocess.run(
        [str(ESBUILD), "browser_chat.js", "--bundle", "--format=esm", "--platform=browser", "--target=es2022",
         f"--outfile={out}", "--log-level=error"],
        cwd=AI_SDK_DIR, check=True, timeout=60,
    )
    return out.read_bytes()


@pytest.fixture
def open_chat(chromium, alice_state, proxy, bundle):
    """Open the page for a chat id, on the proxy's origin (the page is served by the browser's route, the API by us)."""
    context = chromium.new_context(storage_state=alice_state)
    page = context.new_page()

    def serve(route):
        is_script = urlparse(route.request.url).path.endswith("/chat.js")
        route.fulfill(body=bundle if is_script else PAGE, content_type="text/javascript" if is_script else "text/html")

    page.route(f"{proxy.url}/ai-sdk-page/**", serve)

    def open_page(chat_id: str):
        page.goto(f"{proxy.url}/ai-sdk-page/index.html?chat={chat_id}")
        page.wait_for_selector("body[data-ready='true']")
        return page

    yield open_page
    context.close()


@pytest.fixture
def api(chat_server):
    """Alice's API client (a bearer token) to read what the server stored."""
    token = httpx.post(
        f"{chat_server.url}/api/auth/token", json={"username": "alice", "password": USERS["alice"]}
    ).json()["token"]
    with httpx.Client(base_url=chat_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


def shown(page) -> list[tuple[str, str, str, str]]:
    """(id, role, reasoning, text) of each message the page shows."""
    return [
        tuple(item)
        for item in page.eval_on_selector_all(
            "#messages li",
            "items => items.map(i => [i.dataset.id, i.dataset.role, i.querySelector('.reasoning').textContent,"
            " i.querySelector('.text').textContent])",
        )
    ]


def stored(api, chat_id: str) -> list[tuple[str, str, str, str]]:
    messages = api.get(f"/api/ai-sdk/chat/{chat_id}/messages").json()
    return [
        (m["id"], m["role"], *("".join(p["text"] for p in m["parts"] if p["type"] == kind) for kind in ("reasoning", "text")))
        for m in messages
    ]


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_answer_complete(page) -> None:
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'ready'"
        " && document.querySelector('#messages li:last-child')?.dataset.status === 'complete'",
        timeout=60_000,
    )


def wait_reasoning(page) -> None:
    page.wait_for_function(
        "() => document.querySelector('#messages li[data-role=assistant]:last-child .reasoning')?.textContent",
        timeout=30_000,
    )


def test_a_cut_mid_reasoning_is_resumed_and_the_chat_equals_the_stored_one(open_chat, proxy, api):
    chat_id = uuid.uuid4().hex
    page = open_chat(chat_id)
    send(page, PROMPT)
    wait_reasoning(page)
    assert proxy.cut() >= 1
    wait_answer_complete(page)
    chat = stored(api, chat_id)
    assert shown(page) == chat
    assert [role for _, role, _, _ in chat] == ["user", "assistant"]
    _, _, reasoning, text = chat[-1]
    assert reasoning and text, "both parts, whole"
    assert any("/api/ai-sdk/chat/" in line and "/stream" in line for line in proxy.requests), "it resumed"


def test_a_reload_mid_answer_restores_the_chat_and_resumes_it(open_chat, api):
    chat_id = uuid.uuid4().hex
    page = open_chat(chat_id)
    send(page, PROMPT)
    wait_reasoning(page)
    page = open_chat(chat_id)  # The same page loaded again: /messages, then the running answer from its start.
    wait_answer_complete(page)
    chat = stored(api, chat_id)
    assert shown(page) == chat and len(chat) == 2
    assert chat[-1][2] and chat[-1][3]


def test_stop_cancels_on_the_server(open_chat, api):
    chat_id = uuid.uuid4().hex
    page = open_chat(chat_id)
    send(page, PROMPT)
    wait_reasoning(page)
    page.click("#stop")
    page.wait_for_function("() => document.getElementById('status').textContent === 'ready'", timeout=30_000)
    eventually(
        lambda: stored_status(api, chat_id) == "cancelled", what="the answer to be cancelled on the server", timeout=30
    )
    (_, _, shown_reasoning, shown_text), (_, _, reasoning, text) = shown(page)[-1], stored(api, chat_id)[-1]
    assert reasoning.startswith(shown_reasoning) and text.startswith(shown_text), "what it showed, it kept"


def stored_status(api, chat_id: str) -> str:
    return api.get(f"/api/ai-sdk/chat/{chat_id}/messages").json()[-1]["metadata"]["status"]
