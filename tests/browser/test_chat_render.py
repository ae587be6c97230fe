"""Rendering on the chat page, with answers from a real OpenAI-compatible upstream that echoes the prompt.

The echo makes the model say exactly what a test needs: hostile HTML, a long
fast answer, or a fault (`[upstream:<scenario>]` in the prompt picks one).
"""

import pytest

from tests.browser.chat_page import assert_shows_stored

pytestmark = pytest.mark.timeout(60)

# Counts every callback of a MutationObserver on the answer being streamed:
# one callback per task that changed it, i.e. one per DOM update.
COUNT_UPDATES = """
window.__updates = [];
new MutationObserver((records) => {
    if (records.some((r) => r.target.closest && r.target.closest('.message.assistant .content')
            || r.target.parentElement?.closest('.message.assistant .content'))) {
        window.__updates.push(performance.now());
    }
}).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
"""


def test_dom_updates_are_batched_by_the_window_not_by_token(echo_chat, upstream):
    prompt = " ".join(f"word{i}" for i in range(400))  # echoed back as ~400 tokens, one every 4 ms
    echo_chat.page.evaluate(COUNT_UPDATES)
    generation_id = echo_chat.send(prompt)
    echo_chat.wait_state("ended")
    stored = assert_shows_stored(echo_chat, generation_id)
    tokens = stored["last_seq"]
    updates = echo_chat.page.evaluate("window.__updates")
    window_ms = echo_chat.page.evaluate("window.chatDebug.config.renderWindowMs")
    assert window_ms == 48
    assert tokens >= 400
    span_ms = updates[-1] - updates[0]
    # One update per 48 ms window at most (plus the first), however many tokens arrive.
    assert len(updates) <= span_ms / window_ms + 2, (len(updates), span_ms)
    assert len(updates) * 5 <= tokens, (len(updates), tokens)
    assert echo_chat.page.evaluate("window.chatDebug.renders") == len(updates)


def test_model_html_renders_as_text(echo_chat):
    hostile = (
        '<script>window.__pwned = "script"</script> '
        "<img src=x onerror=\"window.__pwned = 'img'\"> "
        "**bold** and `<b>code</b>`"
    )
    generation_id = echo_chat.send(hostile)
    echo_chat.wait_state("ended")
    stored = assert_shows_stored(echo_chat, generation_id)
    assert stored["text"] == "Echo: " + hostile  # the model really answered with the HTML
    answer = echo_chat.page.locator(".message.assistant").last.locator(".content")
    assert '<script>window.__pwned = "script"</script>' in answer.text_content()
    assert "<img src=x onerror=\"window.__pwned = 'img'\">" in answer.text_content()
    assert answer.locator("script, img").count() == 0
    assert answer.locator("strong").text_content() == "bold"
    assert answer.locator("code").text_content() == "<b>code</b>"
    assert echo_chat.page.locator("#messages script, #messages img").count() == 0
    assert echo_chat.page.evaluate("window.__pwned ?? null") is None
    # The prompt, shown in the user's bubble, is text as well.
    assert echo_chat.page.locator(".message.user .content").last.text_content() == hostile


@pytest.mark.parametrize(
    "scenario, status, label, notice",
    [
        ("stall", "interrupted", "Interrupted by the server", "Stopped early: the model stopped sending."),
        ("cut", "interrupted", "Interrupted by the server", "Stopped early: the model's connection failed."),
        ("error_500", "failed", "Failed", "The model could not finish this answer."),
    ],
)
def test_terminal_events_from_the_server_are_shown_as_such(echo_chat, scenario, status, label, notice):
    generation_id = echo_chat.send(f"Please misbehave [upstream:{scenario}] now")
    end = echo_chat.wait_state("ended")
    assert end["detail"]["status"] == status
    stored = assert_shows_stored(echo_chat, generation_id)
    assert stored["status"] == status
    shown = echo_chat.status()
    assert shown["label"] == label and shown["outcome"] == status
    assert echo_chat.page.locator(".message.assistant").last.locator(".notice").text_content().startswith(notice)
    assert echo_chat.page.locator("#prompt").is_editable()
    # The connection itself never looked dead: in the stall case the upstream
    # was silent for 2.5 s, past the client's 1.2 s stall timer, but the
    # server's keepalive comments came, so the page showed the model stalled
    # (Interrupted) on the same connection, and the server's end after it.
    if scenario == "stall":
        assert echo_chat.states() == ["connecting", "streaming", "interrupted", "ended"]
        stalled = echo_chat.transitions()[2]["detail"]
        assert stalled["stalled"] and stalled["reason"].startswith("The model has sent nothing for")
    else:
        assert echo_chat.states() == ["connecting", "streaming", "ended"]
