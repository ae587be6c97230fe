"""Answers that stopped short: the Continue button, and a restart of the server mid-answer with nobody clicking."""

import signal

import pytest

from chat.llm import CONTINUE_INSTRUCTION
from tests.browser.chat_page import (
    FAST_CLIENT,
    assert_shows_stored,
    chat_pages,
    logged_in_state,
)
from tests.support.openai_upstream import echo_reply
from tests.support.server import query

pytestmark = pytest.mark.timeout(120)

# Records whether a Continue button was disabled, however briefly (the echo upstream answers in milliseconds).
WATCH_CONTINUE = """() => {
  window.continueDisabled = false;
  new MutationObserver((records) => {
    if (records.some((r) => r.target.matches?.('.continue') && r.target.disabled)) window.continueDisabled = true;
  }).observe(document.body, { attributes: true, attributeFilter: ['disabled'], subtree: true });
}"""


def test_continue_goes_on_in_the_same_bubble_from_the_keyboard(echo_chat):
    chat = echo_chat
    first = chat.send("[upstream:cut] tell me how resumable streams work")
    end = chat.wait_state("ended")
    assert end["detail"]["status"] == "interrupted"
    partial = chat.stored_generation(first)["text"]
    answer = chat.page.locator(".message.assistant").last
    message_id = answer.get_attribute("data-message-id")
    control = answer.locator(".continue")
    assert control.is_visible() and control.is_enabled()

    chat.page.evaluate(WATCH_CONTINUE)
    control.focus()
    chat.page.keyboard.press("Enter")
    chat.page.wait_for_function("(first) => window.chatDebug.generationId !== first", arg=first)
    second = chat.generation_id
    chat.wait_state("ended")
    stored = assert_shows_stored(chat, second)

    assert chat.page.evaluate("window.continueDisabled"), "the button is disabled while the answer goes on"
    assert stored["status"] == "complete" and stored["text"] == partial + echo_reply(CONTINUE_INSTRUCTION)
    assert chat.page.locator(".message.assistant").count() == 1, "the same bubble, no new message"
    assert chat.page.locator(".message.assistant").last.get_attribute("data-message-id") == message_id
    assert chat.page.locator(".continue").count() == 0, "a complete answer has nothing to continue"
    assert chat.page.evaluate("document.activeElement.id") == "prompt", "the focus is not dropped on the page"


RESTART_ENV = {
    "CHAT_RESUME_INTERRUPTED_MAX_AGE_S": "600",
    "CHAT_SIMULATED_TOKENS_PER_S": "25",
    "CHAT_SIMULATED_POINTS": "8",
    "CHAT_REAPER_INTERVAL_S": "0.5",
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_answer_ends_with_the_whole_answer_and_no_click(chromium, start_server, sig):
    server = start_server("sqlite", fresh=True, **RESTART_ENV)
    successor = None
    with chat_pages(chromium, server.url, server.database_url, client_config=FAST_CLIENT,
                    storage_state=logged_in_state(server.url)) as make:
        chat = make()
        generation_id = chat.send("How should a chat server survive a restart?")
        chat.wait_text(60)
        server.stop(sig)
        successor = server.successor().start()
        try:
            end = chat.wait_state("ended", timeout=90_000)
            stored = assert_shows_stored(chat, generation_id)
        finally:
            successor.stop()
        assert end["detail"]["status"] == "complete" and chat.status()["label"] == "Complete"
    (row,) = query(server.database_url, "SELECT runs FROM chat_generation")
    assert stored["status"] == "complete" and row["runs"] == 2
