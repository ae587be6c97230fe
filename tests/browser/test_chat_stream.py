"""The chat page streams answers in real Chromium: happy path, cuts, stalls, fallback, errors."""

import pytest

pytestmark = pytest.mark.timeout(60)

PROMPT = "How should a chat client resume a dropped stream?"


def assert_shows_stored(chat, generation_id: str) -> dict:
    """The finished answer in the DOM is exactly the stored message, rendered."""
    stored = chat.wait_stored_terminal(generation_id)
    assert chat.client_text() == stored["text"]
    assert chat.shown_html() == chat.markdown_html(stored["text"])
    return stored


def test_happy_path_final_dom_equals_stored_message(chat):
    generation_id = chat.send(PROMPT)
    chat.wait_state("streaming")
    chat.wait_text(20)
    end = chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "complete"
    assert end["detail"]["status"] == "complete"
    assert chat.states() == ["connecting", "streaming", "ended"]
    status = chat.status()
    assert status["label"] == "Complete"
    assert status["tokens"] == f"{stored['last_seq']} tokens"
    assert status["rate"].endswith("tok/s")
    # The user's prompt is shown as sent, and the composer is usable again.
    assert chat.page.locator(".message.user").last.text_content() == PROMPT
    assert chat.page.locator("#prompt").is_enabled()
    assert chat.page.locator("#stop").is_hidden()
