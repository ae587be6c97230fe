"""Outages that drop every packet: the page notices the dead connection by its silence, and ends with the exact answer.

The fault proxy's black hole (`FaultProxy.black_hole()`) closes nothing and
forwards nothing, and every connection open during it stays silent for good,
as after a switch of network: only the page's own silence timer (two of the
server's keepalive periods) can tell. The client runs with the product's
timings here (no test overrides), and the server with its default keepalive.
Timings are measured by bench/dead_connection.py, not asserted.
"""

import time

import pytest

from tests.browser.chat_page import chat_pages, logged_in_state
from tests.browser.test_chat_outage import (
    PROMPT,
    SLOW_ENV,
    assert_ends_with_stored_answer,
)
from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def slow_server(start_server):
    return start_server("sqlite", **SLOW_ENV)


@pytest.fixture(scope="module")
def hole_proxy(slow_server):
    with FaultProxy(slow_server.port) as proxy:
        yield proxy


@pytest.fixture
def net(hole_proxy):
    yield hole_proxy
    hole_proxy.reset()


@pytest.fixture
def open_page(chromium, slow_server, net):
    state = logged_in_state(slow_server.url)
    with chat_pages(chromium, net.url, slow_server.database_url, storage_state=state) as make:
        yield make


@pytest.mark.parametrize("outage_s", [2, 5])
def test_a_black_hole_mid_answer_ends_with_the_exact_answer(open_page, net, slow_server, outage_s):
    chat = open_page()
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    with net.outage(black_hole=True):
        time.sleep(outage_s)  # the outage's length: the scenario, not a synchronisation
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    reconnects = [t["detail"] for t in chat.transitions() if t["state"] == "interrupted"]
    assert reconnects and all(d.get("reconnecting") for d in reconnects), reconnects
    assert any(d["reason"].startswith("No data for") for d in reconnects), "found dead by its silence"


def test_a_message_sent_into_a_black_hole_goes_out_when_the_network_is_back(open_page, net, slow_server):
    """No answer to the POST: the page says it is not sent yet, and sends it (once) when the network is back."""
    chat = open_page()
    prompt = f"{PROMPT}, asked into a black hole"
    net.black_hole()
    chat.page.fill("#prompt", prompt)
    chat.page.press("#prompt", "Enter")
    chat.page.wait_for_function("() => document.getElementById('status').dataset.state === 'error'")
    assert chat.status()["detail"].startswith("Not sent yet:")
    assert chat.page.input_value("#prompt") == prompt, "the text stays until it is sent"
    net.restore()
    chat.page.wait_for_function("() => window.chatDebug.generationId !== null")
    generation_id = chat.generation_id
    assert_ends_with_stored_answer(chat, slow_server, generation_id)
    assert chat.status()["state"] != "error" and chat.page.input_value("#prompt") == ""
    messages = chat.db("SELECT count(*) FROM chat_message WHERE role = 'user' AND content = ?", prompt)
    assert messages == [(1,)], "sent once, however many tries"


def test_an_error_after_sending_offline_goes_away_when_the_message_is_sent(open_page, slow_server):
    chat = open_page()
    chat.page.context.set_offline(True)
    chat.page.fill("#prompt", PROMPT)
    chat.page.press("#prompt", "Enter")
    chat.page.wait_for_function("() => document.getElementById('status').dataset.state === 'error'")
    assert chat.status()["label"] == "Offline"
    chat.page.context.set_offline(False)  # fires `online`
    chat.page.wait_for_function("() => window.chatDebug.generationId !== null")
    assert_ends_with_stored_answer(chat, slow_server, chat.generation_id)
    assert chat.status()["label"] == "Complete"
