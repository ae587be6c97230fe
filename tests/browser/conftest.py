"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, the app under Daphne.

Every page goes through a fault-injecting proxy (tests/support/proxy.py), so a
test can cut, stall or refuse the browser's connections without any test-only
hook in the server.
"""

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.proxy import FaultProxy
from tests.support.server import USERS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
REQUIRE_SERVICES = os.environ.get("CHAT_REQUIRE_SERVICES") == "1"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Short client timings so that stalls and backoffs take a fraction of a second.
FAST_CLIENT = {"stallMs": 1200, "backoffBaseMs": 100, "backoffCapMs": 400, "fallbackPollMs": 200}

# Paced so that a test can act mid-stream: answers of ~60-120 tokens take 1.5-3 s.
SIMULATED_ENV = {"CHAT_SIMULATED_TOKENS_PER_S": 40, "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0.05}


@pytest.fixture(scope="session")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and CHAT_REQUIRE_SERVICES=1")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def chat_server(start_server):
    """The app with the simulated model, paced for mid-stream faults."""
    return start_server("sqlite", **SIMULATED_ENV)


@pytest.fixture(scope="session")
def session_proxy(chat_server):
    with FaultProxy(chat_server.port) as proxy:
        yield proxy


@pytest.fixture
def proxy(session_proxy):
    yield session_proxy
    session_proxy.reset()


@pytest.fixture(scope="session")
def upstream():
    """A real OpenAI-compatible upstream whose "ok" answer echoes the prompt, quickly."""
    with OpenAIUpstream(scenario="ok", token_delay_s=0.004, tokens_before_fault=4) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def echo_server(start_server, upstream):
    """The app answering through the OpenAI provider from the local upstream."""
    return start_server(
        "sqlite",
        CHAT_LLM_PROVIDER="openai",
        CHAT_OPENAI_BASE_URL=upstream.base_url,
        CHAT_OPENAI_MODEL="echo",
        CHAT_UPSTREAM_STALL_S=1,
    )


class ChatPage:
    """The chat page in one browser context, logged in as alice."""

    def __init__(self, page, base_url: str, database_url: str):
        self.page = page
        self.base_url = base_url
        self.database_path = database_url.removeprefix("sqlite:///")

    # --- Navigation -----------------------------------------------------------

    def open(self, path: str = "/") -> "ChatPage":
        self.page.goto(self.base_url + path)
        self.page.wait_for_selector("body[data-ready='1']")
        return self

    def login(self, username: str = "alice") -> "ChatPage":
        self.page.goto(self.base_url + "/accounts/login/?next=/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", USERS[username])
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("body[data-ready='1']")
        return self

    # --- Actions ---------------------------------------------------------------------

    def send(self, prompt: str) -> str:
        """Type a prompt, press Enter; return the new generation's id."""
        before = self.page.evaluate("window.chatDebug.generationId")
        self.page.fill("#prompt", prompt)
        self.page.press("#prompt", "Enter")
        self.page.wait_for_function(
            "(before) => (window.chatDebug.generationId && window.chatDebug.generationId !== before)"
            " || document.getElementById('status').dataset.state === 'error'",
            arg=before,
            timeout=10_000,
        )
        if self.generation_id in (None, before):
            raise AssertionError(f"sending failed: {self.status()}")
        return self.generation_id

    @property
    def generation_id(self) -> str:
        return self.page.evaluate("window.chatDebug.generationId")

    # --- Observations -------------------------------------------------------------------

    def state(self) -> str | None:
        return self.page.evaluate("window.chatDebug.state")

    def wait_state(self, *states: str, timeout: float = 15_000) -> dict:
        """Wait until the stream is in one of `states`; return that transition."""
        self.page.wait_for_function(
            "(states) => states.includes(window.chatDebug.state)", arg=list(states), timeout=timeout
        )
        return self.transitions()[-1]

    def wait_transition(self, state: str, *, after: int = 0, timeout: float = 15_000) -> dict:
        """Wait for a transition to `state` (even a brief one) at index `after` or later; return it."""
        self.page.wait_for_function(
            "([state, after]) => window.chatDebug.transitions.slice(after).some((t) => t.state === state)",
            arg=[state, after],
            timeout=timeout,
        )
        return next(t for t in self.transitions()[after:] if t["state"] == state)

    def wait_text(self, min_chars: int, timeout: float = 15_000) -> str:
        """Wait until the answer being streamed shows at least `min_chars` characters."""
        self.page.wait_for_function(
            "(n) => { const el = document.querySelector('.message.assistant:last-of-type .content');"
            " return el && el.textContent.length >= n; }",
            arg=min_chars,
            timeout=timeout,
        )
        return self.shown_text()

    def transitions(self) -> list[dict]:
        return self.page.evaluate("window.chatDebug.transitions")

    def states(self) -> list[str]:
        return [t["state"] for t in self.transitions()]

    def shown_text(self) -> str:
        return self.page.locator(".message.assistant").last.locator(".content").text_content()

    def shown_html(self) -> str:
        return self.page.locator(".message.assistant").last.locator(".content").inner_html()

    def client_text(self) -> str:
        """The raw answer text the stream client holds (the DOM shows it as Markdown)."""
        return self.page.evaluate("window.chatDebug.transitions.at(-1).text")

    def markdown_html(self, text: str) -> str:
        """How the page renders `text`: the DOM of a finished answer must equal this."""
        return self.page.evaluate(
            """async (text) => {
                const { renderMarkdown } = await import('/static/chat/markdown.js');
                const div = document.createElement('div');
                div.append(renderMarkdown(text));
                return div.innerHTML;
            }""",
            text,
        )

    def status(self) -> dict:
        return self.page.evaluate(
            """() => ({
                state: document.getElementById('status').dataset.state,
                outcome: document.getElementById('status').dataset.outcome || '',
                label: document.getElementById('status-state').textContent,
                detail: document.getElementById('status-detail').textContent,
                tokens: document.getElementById('status-tokens').textContent,
                rate: document.getElementById('status-rate').textContent,
            })"""
        )

    # --- The database, read directly: what the server really stored ------------------

    def db(self, sql: str, *params):
        with sqlite3.connect(f"file:{self.database_path}?mode=ro", uri=True, timeout=10) as connection:
            return connection.execute(sql, params).fetchall()

    def stored_generation(self, generation_id: str) -> dict:
        rows = self.db(
            "SELECT g.status, m.content, g.conversation_id, g.user_message_id, g.last_seq, g.interrupt_reason"
            " FROM chat_generation g JOIN chat_message m ON m.id = g.assistant_message_id WHERE g.id = ?",
            generation_id.replace("-", ""),
        )
        assert rows, f"generation {generation_id} is not in the database"
        status, content, conversation_id, user_message_id, last_seq, reason = rows[0]
        return {
            "status": status,
            "text": content,
            "conversation_id": conversation_id,
            "user_message_id": user_message_id,
            "last_seq": last_seq,
            "reason": reason,
        }

    def wait_stored_terminal(self, generation_id: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = self.stored_generation(generation_id)
            if stored["status"] not in ("queued", "streaming"):
                return stored
            time.sleep(0.05)
        raise AssertionError(f"generation {generation_id} did not end within {timeout} s")


def new_chat_page(chromium, base_url: str, database_url: str, *, viewport=DESKTOP, client_config=None, storage_state=None):
    context = chromium.new_context(viewport=viewport, storage_state=storage_state)
    if client_config is not None:
        context.add_init_script(f"window.CHAT_CLIENT_CONFIG = {json.dumps(client_config)};")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    chat = ChatPage(page, base_url, database_url)
    chat.errors = errors
    return chat


@pytest.fixture(scope="session")
def alice_state(chromium, session_proxy, chat_server, tmp_path_factory) -> Path:
    """Log alice in once; every test's browser context starts from these cookies."""
    chat = new_chat_page(chromium, session_proxy.url, chat_server.database_url)
    chat.login("alice")
    path = tmp_path_factory.mktemp("browser") / "alice.json"
    chat.page.context.storage_state(path=str(path))
    chat.page.context.close()
    return path


@pytest.fixture
def make_page(chromium, session_proxy, chat_server, alice_state, proxy):
    """Open the chat page through the proxy; keyword arguments as for new_chat_page."""
    pages = []

    def make(**options) -> ChatPage:
        options.setdefault("client_config", FAST_CLIENT)
        chat = new_chat_page(chromium, proxy.url, chat_server.database_url, storage_state=str(alice_state), **options)
        pages.append(chat)
        return chat.open()

    yield make
    for chat in pages:
        chat.page.context.close()
    for chat in pages:
        assert not chat.errors, f"uncaught errors in the page: {chat.errors}"


@pytest.fixture
def chat(make_page) -> ChatPage:
    return make_page()


@pytest.fixture(scope="session")
def echo_state(chromium, echo_server, tmp_path_factory) -> Path:
    chat = new_chat_page(chromium, echo_server.url, echo_server.database_url)
    chat.login("alice")
    path = tmp_path_factory.mktemp("browser") / "alice-echo.json"
    chat.page.context.storage_state(path=str(path))
    chat.page.context.close()
    return path


@pytest.fixture
def echo_chat(chromium, echo_server, echo_state):
    """The chat page of the echo server (OpenAI provider), directly, without the proxy."""
    chat = new_chat_page(
        chromium, echo_server.url, echo_server.database_url, storage_state=str(echo_state), client_config=FAST_CLIENT
    )
    yield chat.open()
    chat.page.context.close()
    assert not chat.errors, f"uncaught errors in the page: {chat.errors}"
