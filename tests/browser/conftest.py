"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, the app under Daphne.

Every page goes through a fault-injecting proxy (tests/support/proxy.py), so a
test can cut, stall or refuse the browser's connections without any test-only
hook in the server.
"""

import os

import pytest

from tests.browser.chat_page import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FAST_CLIENT,
    ChatPage,
    chat_pages,
    logged_in_state,
)
from tests.conftest import require_service
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.proxy import FaultProxy

# Paced so that a test can act mid-stream, even on a busy machine: answers of ~150-250 tokens take 5-8 s
# (at 60 tokens/s, 3-4 s answers ended before a loaded CI machine had reloaded the page).
SIMULATED_ENV = {
    "CHAT_SIMULATED_TOKENS_PER_S": 30,
    "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0.05,
    "CHAT_SIMULATED_POINTS": 8,
    "CHAT_SIMULATED_MAX_TOKENS": 1000,
}


@pytest.fixture(scope="module")
def chromium():
    """One browser per test module.

    Playwright's sync API keeps an event loop running in this thread while it
    is open, which would stop the async tests that run after these; closing it
    at the end of each module gives them a clean thread.
    """
    require_service(
        os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
    )
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
        # A silent upstream outlasts the tests' client stall timer (1.2 s), while
        # keepalives every 0.4 s keep the connection visibly alive.
        CHAT_UPSTREAM_STALL_S=2.5,
        CHAT_STREAM_KEEPALIVE_S=0.4,
    )


@pytest.fixture(scope="session")
def alice_state(chat_server) -> dict:
    """Alice's session on the chat server: every test's browser context starts logged in."""
    return logged_in_state(chat_server.url)


@pytest.fixture
def make_page(chromium, chat_server, alice_state, proxy):
    """Open the chat page through the proxy; keyword arguments as for new_chat_page."""
    with chat_pages(chromium, proxy.url, chat_server.database_url, client_config=FAST_CLIENT, storage_state=alice_state) as make:
        yield make


@pytest.fixture
def chat(make_page) -> ChatPage:
    return make_page()


@pytest.fixture(scope="session")
def echo_state(echo_server) -> dict:
    return logged_in_state(echo_server.url)


@pytest.fixture
def echo_chat(chromium, echo_server, echo_state):
    """The chat page of the echo server (OpenAI provider), directly, without the proxy."""
    with chat_pages(chromium, echo_server.url, echo_server.database_url, storage_state=echo_state, client_config=FAST_CLIENT) as make:
        yield make()
