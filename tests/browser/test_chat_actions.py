"""What a person does on the chat page: compose, stop, regenerate, refresh, scroll, manage conversations."""

import httpx
import pytest

from tests.browser.chat_page import (
    ANSWER_STREAMS,
    PROMPT,
    assert_shows_stored,
    new_chat_page,
    stream_connections,
)
from tests.support.server import USERS

pytestmark = pytest.mark.timeout(60)


def test_composer_enter_sends_and_shift_enter_breaks_the_line(chat):
    chat.page.click("#prompt")
    chat.page.keyboard.type("First line")
    chat.page.keyboard.press("Shift+Enter")
    chat.page.keyboard.type("second line about retries")
    assert chat.page.input_value("#prompt") == "First line\nsecond line about retries"
    assert chat.generation_id is None  # Shift+Enter did not send
    chat.page.keyboard.press("Enter")
    chat.page.wait_for_function("() => window.chatDebug.generationId !== null")
    # While the answer streams, the composer takes typing (a message sent then waits its turn), and Stop shows.
    chat.wait_state("streaming")
    assert chat.page.locator("#prompt").is_editable()
    assert chat.page.evaluate("document.activeElement.id") == "prompt"  # the focus stays in the composer
    assert chat.page.locator("#send").is_visible()
    assert chat.page.locator("#stop").is_visible()
    chat.wait_state("ended")
    assert chat.page.locator("#prompt").is_editable()
    assert chat.page.input_value("#prompt") == ""
    assert chat.page.locator(".message.user .content").last.text_content() == "First line\nsecond line about retries"


def test_stop_cancels_the_generation_and_keeps_the_partial_text(chat):
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    chat.page.click("#stop")
    end = chat.wait_state("ended")
    assert end["detail"]["status"] == "cancelled"
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "cancelled"
    assert 30 <= len(chat.shown_text())
    assert chat.status()["label"] == "Stopped"
    notice = chat.page.locator(".message.assistant").last.locator(".notice")
    assert notice.text_content() == "You stopped this answer."
    assert chat.page.locator("#prompt").is_editable()


def test_escape_stops_the_answer_and_a_reopened_conversation_still_says_so(chat):
    generation_id = chat.send(PROMPT)
    chat.wait_text(30)
    assert chat.page.evaluate("document.activeElement.id") == "prompt"
    chat.page.keyboard.press("Escape")
    end = chat.wait_state("ended")
    assert end["detail"]["status"] == "cancelled"
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "cancelled"
    # Opened again later, the stopped answer keeps its notice.
    chat.open(f"/?conversation={stored['conversation_id']}")
    answer = chat.page.locator(".message.assistant").last
    assert answer.locator(".content").inner_html() == chat.markdown_html(stored["text"], cut=True)
    assert answer.locator(".notice").text_content() == "You stopped this answer."


def test_regenerate_starts_a_new_generation_for_the_same_prompt(chat):
    first = chat.send(PROMPT)
    chat.wait_state("ended")
    chat.page.locator(".regenerate").click()
    chat.page.wait_for_function("(first) => window.chatDebug.generationId !== first", arg=first)
    second = chat.generation_id
    chat.wait_state("ended")
    stored_first = chat.stored_generation(first)
    stored_second = assert_shows_stored(chat, second)
    assert stored_second["status"] == "complete"
    assert stored_second["user_message_id"] == stored_first["user_message_id"]
    # The old answer stays as a version: ‹ 2/2 › shows the new one, ‹ goes back to the first.
    answer = chat.page.locator(".message.assistant")
    assert answer.count() == 1 and chat.page.locator(".message.user").count() == 1
    assert stored_second["text"] != stored_first["text"]  # the simulated model varies by version
    assert answer.locator(".version-position").text_content() == "2/2"
    assert chat.page.locator(".regenerate").count() == 1
    answer.locator(".version-previous").focus()
    chat.page.keyboard.press("Enter")  # from the keyboard
    chat.page.wait_for_function("() => document.querySelector('.message.assistant .version-position')?.textContent === '1/2'")
    assert chat.shown_html() == chat.markdown_html(stored_first["text"])
    assert chat.page.locator(".message.assistant").count() == 1
    assert chat.page.locator(".message.assistant .version-next").is_enabled()
    assert chat.page.locator(".message.assistant .version-previous").is_disabled()
    # The focus stays on the switcher (on its other arrow, this one being at the end), not on the page.
    assert chat.page.evaluate("document.activeElement.className") == "btn icon version-next"
    box = chat.page.locator(".message.assistant .version-next").bounding_box()
    assert box["width"] >= 24 and box["height"] >= 24, "a target big enough to hit"
    assert chat.status()["label"] == "Complete", "the status line describes the version shown"


def test_refresh_mid_stream_resumes_the_same_generation(chat):
    generation_id = chat.send(PROMPT)
    chat.wait_text(60)
    assert f"generation={generation_id}" in chat.page.url
    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready='1']")
    assert chat.generation_id == generation_id  # found the running answer, did not start another
    chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert stored["status"] == "complete"
    conversation_id = stored["conversation_id"]
    assert chat.db("SELECT count(*) FROM chat_generation WHERE conversation_id = ?", conversation_id) == [(1,)]
    assert chat.db("SELECT count(*) FROM chat_message WHERE conversation_id = ? AND role = 'user'", conversation_id) == [(1,)]
    # The reloaded page resumed from its last event (kept in sessionStorage), not from the start.
    connections = stream_connections(chat, generation_id)
    assert len(connections) == 2
    assert connections[1][0] is not None and connections[1][0] > 0
    assert chat.page.url.endswith(f"/?conversation={conversation_id}")


def test_opening_a_finished_generation_by_url_shows_it_without_streaming(chat, make_page):
    generation_id = chat.send(PROMPT)
    chat.wait_state("ended")
    stored = chat.stored_generation(generation_id)
    # The first page's own (a busy machine may have made it reconnect once before its first byte).
    streamed = stream_connections(chat, generation_id)
    other = make_page()
    other.open(f"/?generation={generation_id}")
    assert other.page.locator(".message.assistant").last.locator(".content").inner_html() == other.markdown_html(
        stored["text"]
    )
    assert other.status()["label"] == "Complete"
    assert stream_connections(chat, generation_id) == streamed  # nothing was streamed again


def test_unknown_or_foreign_objects_in_the_url_say_not_found(chat, chat_server):
    # Bob's answer, posted over the API.
    with httpx.Client(base_url=chat_server.url, timeout=10) as bob:
        bob.get("/accounts/login/")
        bob.post("/accounts/login/", data={"username": "bob", "password": USERS["bob"],
                                          "csrfmiddlewaretoken": bob.cookies["csrftoken"]})
        csrf = {"X-CSRFToken": bob.cookies["csrftoken"]}
        conversation = bob.post("/api/conversations", json={"title": "bob's"}, headers=csrf).json()
        posted = bob.post(f"/api/conversations/{conversation['id']}/messages", json={"content": "secret"}, headers=csrf)
        generation_id = posted.json()["generation"]["id"]
    for path in (
        "/?generation=00000000-0000-4000-8000-000000000000",
        "/?generation=not-a-uuid",
        f"/?generation={generation_id}",
        "/?conversation=999999",
        f"/?conversation={conversation['id']}",
    ):
        chat.open(path)
        assert chat.status()["label"] == "Not found", path
        assert chat.page.locator(".message").count() == 0, path
        assert chat.page.locator(f".conversation[data-id='{conversation['id']}']").count() == 0


def test_follows_the_stream_unless_the_user_scrolled_up(make_page, proxy):
    chat = make_page(viewport={"width": 900, "height": 420})
    chat.send(PROMPT)
    # Wait until the answer is well taller than the list, so that the top is far from the bottom.
    chat.page.wait_for_function(
        "() => { const m = document.getElementById('messages'); return m.scrollHeight - m.clientHeight > 150; }"
    )
    at_bottom = "() => { const m = document.getElementById('messages'); return m.scrollHeight - m.scrollTop - m.clientHeight <= 2; }"
    scroll = "() => { const m = document.getElementById('messages'); return [m.scrollHeight, m.scrollTop, m.clientHeight]; }"
    assert chat.page.evaluate(at_bottom), chat.page.evaluate(scroll)
    # Hold the rest of the answer while the user scrolls up: a short answer could otherwise
    # end before a busy machine has scrolled, and no text would come after.
    assert proxy.stall(ANSWER_STREAMS) >= 1
    chat.page.mouse.move(450, 200)
    chat.page.mouse.wheel(0, -2000)
    chat.page.wait_for_function("() => document.getElementById('messages').scrollTop === 0")
    length = len(chat.shown_text())
    proxy.release()
    chat.wait_text(length + 40)
    assert chat.page.evaluate("document.getElementById('messages').scrollTop") == 0  # left where the user put it
    assert chat.page.locator("#jump").is_visible()
    chat.page.click("#jump")
    chat.page.wait_for_function(at_bottom)
    chat.wait_state("ended")
    assert chat.page.evaluate(at_bottom), chat.page.evaluate(scroll)


def test_logout_is_a_post_and_ends_the_session(chromium, proxy, chat_server):
    # Its own login: logging out the shared session would log out every later test.
    chat = new_chat_page(chromium, proxy.url, chat_server.database_url).login("alice")
    chat.page.click("#logout")
    chat.page.wait_for_url("**/accounts/login/**")
    chat.page.goto(chat.base_url + "/")
    assert "/accounts/login/" in chat.page.url
    chat.page.context.close()


def test_a_message_sent_while_an_answer_streams_is_answered_after_it(chat):
    first = chat.send(PROMPT)
    chat.wait_text(30)
    chat.page.fill("#prompt", "And after that, how does it resume?")
    chat.page.press("#prompt", "Enter")
    queued = chat.page.locator(".message.assistant").nth(1)
    queued.locator(".notice", has_text="Queued").wait_for()
    assert chat.generation_id == first, "the first answer is still the one followed"
    second = queued.get_attribute("data-generation-id")
    chat.page.wait_for_function("(second) => window.chatDebug.generationId === second", arg=second)
    chat.wait_state("ended")
    stored_first, stored_second = chat.stored_generation(first), assert_shows_stored(chat, second)
    assert stored_first["status"] == stored_second["status"] == "complete"
    answers = chat.page.locator(".message.assistant .content")
    assert answers.nth(0).inner_html() == chat.markdown_html(stored_first["text"])
    assert chat.page.locator(".message.user .content").last.text_content() == "And after that, how does it resume?"
