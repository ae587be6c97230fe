"""The chat page as the browser tests see it: actions, observations, and what the server stored."""

import json
import sqlite3
import time
from contextlib import contextmanager

import httpx

from tests.support.server import USERS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Short client timings so that stalls and backoffs take a fraction of a second.
FAST_CLIENT = {"stallMs": 1200, "silenceMs": 1200, "responseMs": 1200, "backoffBaseMs": 100, "backoffCapMs": 400, "fallbackPollMs": 200}

PROMPT = "How should a chat client resume a dropped stream?"

# The requests that carry an answer's stream (proxy paths): the POST that makes it, then its reconnects.
ANSWER_STREAMS = ("POST /api/conversations/", "/stream")


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

    def wait_state(self, *states: str, timeout: float = 45_000) -> dict:
        """Wait until the stream is in one of `states`; return that transition."""
        self.page.wait_for_function(
            "(states) => states.includes(window.chatDebug.state)", arg=list(states), timeout=timeout
        )
        return self.transitions()[-1]

    def wait_transition(self, state: str, *, after: int = 0, timeout: float = 45_000) -> dict:
        """Wait for a transition to `state` (even a brief one) at index `after` or later; return it."""
        self.page.wait_for_function(
            "([state, after]) => window.chatDebug.transitions.slice(after).some((t) => t.state === state)",
            arg=[state, after],
            timeout=timeout,
        )
        return next(t for t in self.transitions()[after:] if t["state"] == state)

    def wait_text(self, min_chars: int, timeout: float = 45_000) -> str:
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

    def markdown_html(self, text: str, *, cut: bool = False) -> str:
        """How the page renders `text`: the DOM of a finished answer must equal this (`cut`: one that ended short)."""
        return self.page.evaluate(
            """async ([text, cut]) => {
                const { renderMarkdown, streamingText } = await import('/static/chat/markdown.js');
                const div = document.createElement('div');
                div.append(renderMarkdown(cut ? streamingText(text) : text));
                return div.innerHTML;
            }""",
            [text, cut],
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

    def wait_stored_terminal(self, generation_id: str, timeout: float = 45.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = self.stored_generation(generation_id)
            if stored["status"] not in ("queued", "streaming"):
                return stored
            time.sleep(0.05)
        raise AssertionError(f"generation {generation_id} did not end within {timeout} s")


def eventually(condition, *, timeout: float = 45.0, what: str = "the condition"):
    """Poll `condition` until it returns something true (and return that), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.05)
    return result


def new_chat_page(
    chromium, base_url: str, database_url: str, *, viewport=DESKTOP, client_config=None, storage_state=None, init_script=""
):
    context = chromium.new_context(viewport=viewport, storage_state=storage_state)
    # Waits end as soon as their condition holds; the bound is for a busy machine, not a pace.
    context.set_default_timeout(45_000)
    if client_config is not None:
        context.add_init_script(f"window.CHAT_CLIENT_CONFIG = {json.dumps(client_config)};")
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    chat = ChatPage(page, base_url, database_url)
    chat.errors = errors
    return chat


@contextmanager
def chat_pages(chromium, base_url: str, database_url: str, **defaults):
    """A factory of opened chat pages (options as for new_chat_page, over `defaults`).

    The pages' contexts are closed afterwards, and an uncaught error in any page fails the test.
    """
    pages = []

    def make(path: str = "/", **options) -> ChatPage:
        chat = new_chat_page(chromium, base_url, database_url, **{**defaults, **options})
        pages.append(chat)
        return chat.open(path)

    yield make
    for chat in pages:
        chat.page.context.close()
    for chat in pages:
        assert not chat.errors, f"uncaught errors in the page: {chat.errors}"


def assert_shows_stored(chat: ChatPage, generation_id: str) -> dict:
    """The finished answer in the DOM is exactly the stored message, rendered."""
    stored = chat.wait_stored_terminal(generation_id)
    assert chat.client_text() == stored["text"]
    assert chat.shown_html() == chat.markdown_html(stored["text"], cut=stored["status"] != "complete")
    return stored


def stream_connections(chat: ChatPage, generation_id: str) -> list[tuple]:
    """(resumed_from, end_reason) of every SSE connection to the generation, in order."""
    return chat.db(
        "SELECT resumed_from, end_reason FROM chat_streamconnection WHERE generation_id = ? ORDER BY id",
        generation_id.replace("-", ""),
    )


def logged_in_state(base_url: str, username: str = "alice") -> dict:
    """Log in over HTTP and return Playwright storage state holding the session cookies."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        http.get("/accounts/login/")
        response = http.post(
            "/accounts/login/",
            data={"username": username, "password": USERS[username], "csrfmiddlewaretoken": http.cookies["csrftoken"]},
        )
        assert response.status_code == 302, f"login failed: {response.status_code}"
        cookies = [
            {"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": "/", "expires": -1,
             "httpOnly": False, "secure": False, "sameSite": "Lax"}
            for c in http.cookies.jar
        ]
    return {"cookies": cookies, "origins": []}
