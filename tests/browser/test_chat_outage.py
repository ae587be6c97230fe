"""Network outages: the chat page gets the whole answer back by itself, without a click.

The outage comes from the fault proxy between Chromium and the server
(`FaultProxy.go_down()`): every open connection is aborted and every new one
refused at once, as when a phone loses its network. (Playwright's
`set_offline` does not cut a stream that is already open.) The answers here
are long and slow (about 12 s), so that an outage falls in the middle of one.

Every test ends with the exact stored answer, read from the API, on the page,
and checks that each state transition is one that docs/client.md lists.
"""

import time
from itertools import pairwise

import pytest

from tests.browser.chat_page import (
    chat_pages,
    eventually,
    logged_in_state,
    stream_connections,
)
from tests.support.proxy import FaultProxy
from tests.support.server import USERS

pytestmark = pytest.mark.timeout(60)

# About 260 tokens at 20 tokens/s: an answer that is still being written through a few seconds of outage.
SLOW_ENV = {
    "CHAT_SIMULATED_TOKENS_PER_S": 20,
    "CHAT_SIMULATED_POINTS": 12,
    "CHAT_SIMULATED_MAX_TOKENS": 1000,
    "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0.05,
}
# The real timings, scaled down: the cap on a wait between attempts is 2 s instead of 8 s.
CLIENT = {"stallMs": 3000, "silenceMs": 3000, "backoffBaseMs": 250, "backoffCapMs": 2000, "fallbackPollMs": 500, "wakeJitterMs": 100}
# Waits between attempts long enough that only an event can end them (with Math.random pinned below).
SLEEPY_CLIENT = {**CLIENT, "backoffBaseMs": 600_000, "backoffCapMs": 600_000}
PIN_RANDOM = "Math.random = () => 0.999;"

PROMPT = "Walk me through how a phone gets a streamed answer back after losing its network"

# The transitions docs/client.md lists (from, to).
ALLOWED = {
    ("connecting", "streaming"),
    ("connecting", "interrupted"),
    ("connecting", "error"),
    ("streaming", "ended"),
    ("streaming", "interrupted"),
    ("interrupted", "interrupted"),
    ("interrupted", "streaming"),
    ("interrupted", "fallback"),
    ("interrupted", "error"),
    ("error", "streaming"),
    ("error", "interrupted"),
    ("error", "fallback"),
}
FINAL = ("ended", "fallback")


@pytest.fixture(scope="module")
def slow_server(start_server):
    return start_server("sqlite", **SLOW_ENV)


@pytest.fixture(scope="module")
def outage_proxy(slow_server):
    with FaultProxy(slow_server.port) as proxy:
        yield proxy


@pytest.fixture
def net(outage_proxy):
    yield outage_proxy
    outage_proxy.reset()


@pytest.fixture
def open_page(chromium, slow_server, net):
    """Open the chat page through the proxy, with the given client timings and init script."""
    state = logged_in_state(slow_server.url)
    with chat_pages(chromium, net.url, slow_server.database_url, storage_state=state) as make:
        yield lambda client=CLIENT, init_script="": make(client_config=client, init_script=init_script)


def stored_answer(chat, server, generation_id: str) -> dict:
    """The generation as the API gives it (straight to the server, not through the proxy)."""
    response = chat.page.request.get(f"{server.url}/api/generations/{generation_id}")
    assert response.ok, response.status
    return response.json()


def assert_ends_with_stored_answer(chat, server, generation_id: str, timeout: float = 30_000) -> dict:
    """The page reaches a final state by itself and shows exactly the stored answer; the transitions are all allowed."""
    chat.wait_state(*FINAL, timeout=timeout)
    stored = stored_answer(chat, server, generation_id)
    assert stored["status"] == "complete"
    assert chat.client_text() == stored["text"]
    assert chat.shown_html() == chat.markdown_html(stored["text"])
    states = chat.states()
    assert states[0] == "connecting"
    bad = [pair for pair in pairwise(states) if pair not in ALLOWED]
    assert not bad, f"transitions not in docs/client.md: {bad} in {states}"
    # One answer, never a second one: the fallback reads the stored answer, it does not ask again.
    conversation = stored["conversation_id"]
    assert chat.db("SELECT count(*) FROM chat_generation WHERE conversation_id = ?", conversation) == [(1,)]
    return stored


def stream_requests(net, generation_id: str) -> int:
    return sum(f"/generations/{generation_id}/stream" in line for line in net.requests)


def test_a_short_outage_mid_answer_ends_with_the_whole_answer_without_a_click(open_page, net, slow_server):
    chat = open_page()
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    with net.outage():
        chat.wait_transition("interrupted")
        time.sleep(3.5)  # the outage's length: the scenario, not a synchronisation
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    # The answer was still being written when the network came back: the page streamed again.
    states = chat.states()
    assert "interrupted" in states
    assert states[-2:] == ["streaming", "ended"]
    assert stream_connections(chat, generation_id)[-1][0] > 0  # resumed from its last event id


def test_a_long_outage_past_the_stall_timer_and_three_strikes_ends_with_the_whole_answer(open_page, net, slow_server):
    chat = open_page()
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    with net.outage():
        down_at = time.monotonic()
        # Past the three strikes and three failed reads of the stored answer: Error, still trying.
        error = chat.wait_transition("error", timeout=15_000)
        assert error["detail"]["retryable"] is True
        time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))  # the outage's length: 20 s in all
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    strikes = [t["detail"] for t in chat.transitions() if t["state"] == "interrupted"][:3]
    assert [d["failures"] for d in strikes] == [1, 2, 3] and strikes[2]["fallback"] is True
    states = chat.states()
    assert states.index("error") < len(states) - 1  # it left Error by itself


def test_an_outage_during_the_fallback_still_ends_with_the_whole_answer(open_page, net, slow_server):
    chat = open_page()
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    net.refuse(path="/stream")  # streaming keeps failing, the plain read works: the fallback
    net.cut()
    chat.page.wait_for_function(
        "() => window.chatDebug.transitions.some((t) => t.detail.fallback) && window.chatDebug.waiting === 'poll'"
    )
    polled = chat.transitions()[-1]
    assert polled["state"] == "interrupted" and polled["detail"]["fallback"] is True
    with net.outage():
        chat.wait_transition("error", after=len(chat.transitions()))
    fallback = assert_ends_with_stored_answer(chat, slow_server, generation_id)
    end = chat.transitions()[-1]
    assert end["state"] == "fallback" and end["detail"]["status"] == fallback["status"]
    assert chat.status()["label"] == "Fallback"


@pytest.mark.parametrize("wake", ["online", "visibilitychange"])
def test_coming_back_online_or_visible_retries_at_once(open_page, net, slow_server, wake):
    # Waits of ~10 minutes between attempts: only the event can bring the retry.
    chat = open_page(SLEEPY_CLIENT, PIN_RANDOM)
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    with net.outage():
        interrupted = chat.wait_transition("interrupted")
        chat.page.wait_for_function("() => window.chatDebug.waiting === 'backoff'")
    assert interrupted["detail"]["failures"] == 1
    assert interrupted["detail"]["retryAt"] - time.time() * 1000 > 60_000
    before = stream_requests(net, generation_id)
    if wake == "online":
        chat.page.evaluate("() => window.dispatchEvent(new Event('online'))")
    else:
        # A phone waking up: the page is hidden, then visible again.
        chat.page.evaluate(
            """() => {
                let state = 'hidden';
                Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
                document.dispatchEvent(new Event('visibilitychange'));
                state = 'visible';
                document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )
    eventually(lambda: stream_requests(net, generation_id) > before, what="a new stream request")
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    assert chat.states()[-2:] == ["streaming", "ended"]


def test_offline_waits_for_the_network_instead_of_counting_failures(open_page, net, slow_server):
    chat = open_page(SLEEPY_CLIENT, PIN_RANDOM)
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    chat.page.context.set_offline(True)  # navigator.onLine is false; the open stream is not cut by this
    net.cut()
    chat.page.wait_for_function("() => window.chatDebug.waiting === 'online'")
    offline = chat.transitions()[-1]
    assert offline["state"] == "interrupted" and offline["detail"]["offline"] is True
    assert offline["detail"]["failures"] == 0  # the cut while offline is not a strike
    assert chat.status()["detail"] == "You are offline. The answer continues when the connection is back."
    assert chat.page.locator("button:visible", has_text="Retry").count() == 0
    before = stream_requests(net, generation_id)
    chat.page.context.set_offline(False)  # fires `online`: retried at once, not after the 10-minute backoff
    eventually(lambda: stream_requests(net, generation_id) > before, what="a new stream request")
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    assert all(t["detail"].get("failures", 0) == 0 for t in chat.transitions())


def test_the_event_channel_recovers_with_the_same_loop(open_page, net, slow_server):
    chat = open_page()
    opened = chat.page.evaluate("window.chatDebug.channel.opens")
    with net.outage():
        chat.page.wait_for_function("() => window.chatDebug.channel.waiting === 'backoff'")
    chat.page.wait_for_function("(opened) => window.chatDebug.channel.opens > opened", arg=opened, timeout=20_000)
    # A conversation created elsewhere (over the API, not through the proxy) appears without a reload.
    token = chat.page.request.post(
        f"{slow_server.url}/api/auth/token", data={"username": "alice", "password": USERS["alice"]}
    ).json()["token"]
    conversation = chat.page.request.post(
        f"{slow_server.url}/api/conversations",
        data={"title": "Made while the page was reconnecting"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    chat.page.wait_for_selector(f".conversation[data-id='{conversation['id']}']")
