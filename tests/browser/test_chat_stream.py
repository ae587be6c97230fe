"""The chat page streams answers in real Chromium: happy path, cuts, stalls, fallback, errors."""

import pytest

from tests.browser.chat_page import (
    ANSWER_STREAMS,
    FAST_CLIENT,
    PROMPT,
    assert_shows_stored,
    eventually,
    logged_in_state,
    stream_connections,
)

pytestmark = pytest.mark.timeout(60)


def test_happy_path_final_dom_equals_stored_message(make_page, proxy):
    # The product's stall timer, not the tests' 1.2 s: a busy machine may pause the stream that long.
    chat = make_page(client_config={**FAST_CLIENT, "silenceMs": 10_000, "stallMs": 10_000})
    generation_id = chat.send(PROMPT)
    chat.wait_state("streaming")
    chat.wait_text(20)
    end = chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "complete"
    assert end["detail"]["status"] == "complete"
    assert chat.states() == ["connecting", "streaming", "ended"]
    # One request per answer: the POST's response was the whole stream.
    assert stream_connections(chat, generation_id) == [(None, "completed")]
    assert not any(f"/api/generations/{generation_id}/stream" in line for line in proxy.requests)
    status = chat.status()
    assert status["label"] == "Complete"
    assert status["tokens"] == f"{stored['last_seq']} tokens"
    assert status["rate"].endswith("tok/s")
    # The user's prompt is shown as sent, and the composer is usable again.
    assert chat.page.locator(".message.user .content").last.text_content() == PROMPT
    assert chat.page.locator("#prompt").is_editable()
    assert chat.page.locator("#stop").is_hidden()


def test_cuts_mid_stream_resume_with_exact_text(make_page, proxy):
    # Cuts are seen as errors at once; the tests' 1.2 s stall timer could add a reconnect before the first byte.
    chat = make_page(client_config={**FAST_CLIENT, "silenceMs": 10_000, "stallMs": 10_000})
    generation_id = chat.send(PROMPT)
    cuts = 0
    for length in (20, 120, 240):
        chat.wait_text(length)
        if chat.state() != "streaming":
            break
        assert proxy.cut() >= 1
        cuts += 1
        chat.wait_transition("interrupted", after=len(chat.transitions()) - 1)
    chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "complete"
    assert cuts >= 2, "the answer ended before the test could cut it twice"
    states = chat.states()
    assert states[:2] == ["connecting", "streaming"] and states[-1] == "ended"
    assert states.count("interrupted") >= cuts
    assert all(a != "interrupted" or b in ("streaming", "interrupted") for a, b in zip(states, states[1:]))
    # Every reconnect named its position with Last-Event-ID.
    connections = stream_connections(chat, generation_id)
    assert len(connections) >= cuts + 1
    assert connections[0][0] is None
    assert all(resumed_from is not None for resumed_from, _ in connections[1:])


def test_stall_shows_interrupted_with_partial_text_then_resumes(chat, proxy):
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    # Hold the stream's bytes, TCP up (a connection the page already left may be held too).
    assert proxy.stall(ANSWER_STREAMS) >= 1
    interrupted = chat.wait_transition("interrupted")
    assert interrupted["detail"]["reason"] == "No data for 1.2 s."
    assert len(interrupted["shown"]) >= 40  # the partial text stays on screen
    end = chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["text"].startswith(interrupted["text"])
    assert end["detail"]["status"] == "complete"
    assert chat.states()[-3:] == ["interrupted", "streaming", "ended"]


def test_stall_is_shown_and_retried_in_the_background(chat, proxy):
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    proxy.stall(ANSWER_STREAMS, new_requests=True)  # every reconnect stalls too, its response included
    chat.page.wait_for_function(
        "() => window.chatDebug.transitions.some((t) => t.state === 'interrupted'"
        " && t.detail.reason === 'No answer from the server for 1.2 s.')"
    )
    # The reconnect got no answer at all: still reconnecting, still trying; the network's fault, no strike.
    status = chat.status()
    assert status["label"] == "Reconnecting…"
    assert "No answer from the server for 1.2 s." in status["detail"]
    first, *rest = [t["detail"] for t in chat.transitions() if t["state"] == "interrupted"]
    assert first["reason"] == "No data for 1.2 s." and first["failures"] == 1
    assert all(detail["failures"] == 1 for detail in rest)
    # One sentence and one Retry button: in the status line, not repeated under the answer.
    assert chat.page.locator(".message.assistant").last.locator(".notice").text_content() == ""
    assert chat.page.locator("button:visible", has_text="Retry").count() == 1
    assert chat.page.locator("#prompt").is_editable()  # typing is accepted while the answer comes (multitask)
    proxy.release()
    end = chat.wait_state("ended", "fallback")
    stored = assert_shows_stored(chat, generation_id)
    assert end["detail"]["status"] == stored["status"] == "complete"


def test_three_failures_fall_back_to_the_complete_text(chat, proxy):
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    proxy.refuse(path="/stream")
    proxy.cut()
    fallback = chat.wait_state("fallback")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "complete" and fallback["detail"]["status"] == "complete"
    # The cut attempt and two refused reconnects: three failures in a row.
    interrupted = [t["detail"] for t in chat.transitions() if t["state"] == "interrupted"]
    assert [d["failures"] for d in interrupted] == [1, 2, 3]
    assert interrupted[-1]["fallback"] is True
    assert sum("/stream" in line for line in proxy.refused) >= 2
    status = chat.status()
    assert status["label"] == "Fallback"
    assert status["detail"] == "Streaming kept failing, so the complete answer was loaded in one piece."
    assert chat.page.locator("#prompt").is_editable()


def test_fallback_failure_is_an_error_that_keeps_the_text_and_can_retry(make_page, proxy):
    # Refusals and cuts are errors at once; the tests' 1.2 s stall timer could add an interruption under load.
    chat = make_page(client_config={**FAST_CLIENT, "silenceMs": 10_000, "stallMs": 10_000})
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    proxy.refuse(path="/api/generations/")  # the stream and the plain request alike
    proxy.cut()
    error = chat.wait_state("error")
    assert error["detail"]["message"] == "The server can't be reached."
    assert error["detail"]["retryable"] is True
    assert len(error["shown"]) >= 30 and chat.shown_text() == error["shown"]
    status = chat.status()
    assert status["label"] == "Error"
    assert status["detail"] == "The server can't be reached; the text so far is kept and the page keeps trying."
    assert chat.page.locator("button:visible", has_text="Retry").count() == 1
    assert chat.page.locator(".regenerate").count() == 0  # it may still be running: retry, don't replace
    # Retry asks again at once; the network is still down, so it stays in Error, still trying.
    refused = len(proxy.refused)
    chat.page.locator("#status-retry").click()
    chat.page.wait_for_function("() => window.chatDebug.state === 'error'")
    eventually(lambda: len(proxy.refused) > refused)
    # Once the network is back it leaves Error by itself: no click.
    proxy.allow()
    chat.wait_state("ended")
    assert assert_shows_stored(chat, generation_id)["text"].startswith(error["text"])
    states = chat.states()
    after_error = states[len(states) - states[::-1].index("error") :]
    # A stream refused just before the network came back, then the stored answer read just after
    # it, shows the answer as still running (interrupted) before the next stream carries it on.
    assert after_error in (["streaming", "ended"], ["interrupted", "streaming", "ended"])


def test_a_refused_post_is_sent_again_and_answered_once(chat, proxy):
    """The POST that carries the answer's stream is refused: it is sent again, with the same Idempotency-Key."""
    proxy.refuse(1, path="POST /api/conversations/")
    generation_id = chat.send(PROMPT)
    chat.wait_state("ended")
    assert assert_shows_stored(chat, generation_id)["status"] == "complete"
    assert sum(line.startswith("POST /api/conversations/") for line in proxy.refused) == 1
    roles = chat.db(
        "SELECT role FROM chat_message WHERE conversation_id = (SELECT conversation_id FROM chat_generation WHERE id = ?)"
        " ORDER BY id",
        generation_id.replace("-", ""),
    )
    assert roles == [("user",), ("assistant",)]  # asked once, answered once


def test_a_client_error_on_reconnect_is_not_retried(make_page, proxy, chat_server):
    # Its own session, because the test ends it.
    chat = make_page(storage_state=logged_in_state(chat_server.url))
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    chat.page.evaluate(
        """() => fetch('/accounts/logout/', { method: 'POST', headers: {
            'X-CSRFToken': document.querySelector('meta[name=csrf-token]').content } })"""
    )
    proxy.cut()
    error = chat.wait_state("error")
    assert error["detail"]["status"] == 401 and error["detail"]["final"] is True
    assert error["detail"]["message"] == "Your session has ended. Log in again to see the rest of this answer."
    assert chat.status()["detail"] == error["detail"]["message"]
    assert len(chat.shown_text()) >= 30  # the partial text is kept
    # One failed attempt (the cut), then the 401: no pointless retries, no fallback, no Retry button.
    assert chat.states()[-2:] == ["interrupted", "error"]
    assert chat.page.evaluate("window.chatDebug.retrying") is False
    assert chat.page.locator("button:visible", has_text="Retry").count() == 0
    assert chat.wait_stored_terminal(generation_id)["status"] == "complete"  # the server carried on
