"""What people expect of a chat app: copy, edit and versions, the model picker, JSON answers, search, timestamps."""

import json

import pytest

from chat.llm import ChatMessage
from chat.llm.simulated import SimulatedProvider
from tests.browser.chat_page import (
    FAST_CLIENT,
    PROMPT,
    assert_shows_stored,
    chat_pages,
    logged_in_state,
)
from tests.browser.conftest import SIMULATED_ENV

pytestmark = pytest.mark.timeout(90)

MODELS = [
    {"provider": "simulated", "model": "simulated-1", "label": "Simulated"},
    {"id": "sim-2", "provider": "simulated", "model": "simulated-2", "label": "Simulated two"},
]


@pytest.fixture(scope="module")
def models_server(start_server):
    return start_server("sqlite", CHAT_MODELS=json.dumps(MODELS), **SIMULATED_ENV)


@pytest.fixture
def models_chat(chromium, models_server):
    state = logged_in_state(models_server.url)
    with chat_pages(chromium, models_server.url, models_server.database_url, storage_state=state, client_config=FAST_CLIENT) as make:
        yield make()


def clipboard(chat) -> str:
    return chat.page.evaluate("() => navigator.clipboard.readText()")


def record_labels(button) -> None:
    """Keep every text the button shows from now on: its "Copied" lasts 1.5 s, which a busy machine's
    round trips to the page can outlast."""
    button.evaluate(
        "(el) => { el.shownLabels = []; new MutationObserver(() => el.shownLabels.push(el.textContent))"
        ".observe(el, {childList: true, characterData: true, subtree: true}); }"
    )


def grant_clipboard(chat):
    chat.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=chat.base_url)


def wait_versions(chat, selector: str, position: str):
    chat.page.wait_for_function(
        "([selector, position]) => document.querySelector(selector)?.textContent === position", arg=[selector, position]
    )


def prompt_with_code() -> str:
    """A prompt whose simulated answer has a code block (the model adds one to about half its answers)."""
    provider = SimulatedProvider(tokens_per_s=0)
    for n in range(50):
        prompt = f"How do I write handler number {n}?"
        if "```" in "".join(provider.answer_tokens([ChatMessage("user", prompt)])):
            return prompt
    raise AssertionError("no simulated answer with code")


def test_copy_puts_the_markdown_of_the_answer_and_the_code_on_the_clipboard(chat):
    grant_clipboard(chat)
    generation_id = chat.send(prompt_with_code())
    chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    answer = chat.page.locator(".message.assistant").last
    assert answer.locator(".code-lang").text_content() == "python"
    assert answer.locator("code .hljs-keyword").count() > 0  # highlighted
    record_labels(answer.locator(".copy-code"))
    answer.locator(".copy-code").click()
    code = stored["text"].split("```python\n")[1].split("\n```")[0]
    assert clipboard(chat) == code
    assert answer.locator(".copy-code").evaluate("(el) => el.shownLabels")[0] == "Copied"  # visible feedback
    answer.hover()
    record_labels(answer.locator(".copy-answer"))
    answer.locator(".copy-answer").click()
    assert clipboard(chat) == stored["text"]  # the Markdown source
    chat.page.wait_for_function("() => document.querySelector('.message.assistant .copy-answer').textContent === 'Copy'")
    assert answer.locator(".copy-answer").evaluate("(el) => el.shownLabels") == ["Copied", "Copy"]


def test_edit_makes_a_branch_both_branches_stream_resume_and_switch(chat):
    first = chat.send("Tell me about caching")
    chat.wait_state("ended")
    stored_first = chat.stored_generation(first)
    user = chat.page.locator(".message.user").last
    user.hover()
    user.locator(".edit").click()
    chat.page.fill(".edit-field", "Tell me about queues")
    chat.page.click(".edit-send")
    chat.page.wait_for_function("(first) => window.chatDebug.generationId && window.chatDebug.generationId !== first", arg=first)
    second = chat.generation_id
    chat.wait_text(20)
    # Refresh mid-stream: the edited branch resumes.
    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready='1']")
    assert chat.generation_id == second
    chat.wait_state("ended")
    stored_second = assert_shows_stored(chat, second)
    assert chat.page.locator(".message.user .content").all_text_contents() == ["Tell me about queues"]
    wait_versions(chat, ".message.user .version-position", "2/2")
    rows = chat.db("SELECT id, parent_id, role FROM chat_message WHERE conversation_id = ? ORDER BY id", stored_first["conversation_id"])
    (u1, p1, _), (a1, pa1, _), (u2, p2, _), (a2, pa2, _) = rows
    assert (p1, pa1, p2, pa2) == (None, u1, None, u2)  # two first messages: two branches
    # Back to the first branch: its question and answer, as stored.
    chat.page.locator(".message.user .version-previous").click()
    wait_versions(chat, ".message.user .version-position", "1/2")
    assert chat.page.locator(".message.user .content").all_text_contents() == ["Tell me about caching"]
    assert chat.shown_html() == chat.markdown_html(stored_first["text"])
    # Going on from the first branch streams there, and a reload keeps that branch (its newest message).
    third = chat.send("And invalidation?")
    chat.wait_state("ended")
    stored_third = assert_shows_stored(chat, third)
    assert chat.db("SELECT parent_id FROM chat_message WHERE id = ?", stored_third["user_message_id"]) == [(a1,)]
    chat.open(f"/?conversation={stored_first['conversation_id']}")
    assert chat.page.locator(".message.user .content").all_text_contents() == ["Tell me about caching", "And invalidation?"]
    chat.page.locator(".message.user .version-next").first.click()
    wait_versions(chat, ".message.user .version-position", "2/2")
    assert chat.page.locator(".message.user .content").all_text_contents() == ["Tell me about queues"]
    assert chat.shown_html() == chat.markdown_html(stored_second["text"])


def test_the_model_picker_sends_the_chosen_model_and_the_conversation_keeps_it(models_chat):
    chat = models_chat
    assert chat.page.locator("#model option").all_text_contents() == ["Simulated", "Simulated two"]
    chat.page.select_option("#model", "sim-2")
    generation_id = chat.send(PROMPT)
    chat.wait_state("ended")
    stored = assert_shows_stored(chat, generation_id)
    assert chat.db("SELECT provider, model FROM chat_generation WHERE id = ?", generation_id.replace("-", "")) == [
        ("simulated", "simulated-2")
    ]
    assert chat.page.locator(".message.assistant .label").text_content() == "Simulated two"
    # Opened again after a new chat, the conversation picks its model again.
    chat.page.click("#new-chat")
    chat.page.select_option("#model", "simulated-1")
    chat.page.locator(f".conversation[data-id='{stored['conversation_id']}'] .conversation-open").click()
    chat.page.wait_for_selector(".message.assistant")
    assert chat.page.input_value("#model") == "sim-2"
    # Regenerate with the other model: a second version, by that model.
    chat.page.select_option("#model", "simulated-1")
    chat.page.locator(".regenerate").click()
    chat.page.wait_for_function("(first) => window.chatDebug.generationId !== first", arg=generation_id)
    chat.wait_state("ended")
    assert chat.db("SELECT model FROM chat_generation WHERE id = ?", chat.generation_id.replace("-", "")) == [("simulated-1",)]
    wait_versions(chat, ".message.assistant .version-position", "2/2")


def test_the_json_toggle_asks_for_json_and_the_answer_is_pretty_printed(chat):
    chat.page.check("#json-mode")
    generation_id = chat.send("List steps for a deploy")
    chat.wait_state("ended")
    stored = chat.wait_stored_terminal(generation_id)
    assert chat.db("SELECT response_format FROM chat_generation WHERE id = ?", generation_id.replace("-", "")) == [("json",)]
    code = chat.page.locator(".message.assistant .content code")
    assert chat.page.locator(".message.assistant .code-lang").text_content() == "json"
    assert code.text_content() == json.dumps(json.loads(stored["text"]), indent=2)
    assert code.locator(".hljs-attr").count() > 0  # highlighted
    # Reopened, it still shows pretty-printed.
    chat.open(f"/?conversation={stored['conversation_id']}")
    assert chat.page.locator(".message.assistant .content code").text_content() == json.dumps(json.loads(stored["text"]), indent=2)


def test_search_finds_a_conversation_by_a_word_of_an_answer_and_never_another_users(chat, chat_server, make_page):
    generation_id = chat.send("Tell me about backpressure")
    chat.wait_state("ended")
    stored = chat.wait_stored_terminal(generation_id)
    other = chat.send("Something unrelated about penguins")  # same conversation; make a second one
    chat.wait_state("ended")
    chat.page.click("#new-chat")
    chat.send("A separate chat about zebras")
    chat.wait_state("ended")
    word = next(w.strip(".,:;") for w in stored["text"].split() if w.strip(".,:;").isalpha() and len(w) > 8)
    chat.page.fill("#search", word.upper())
    chat.page.wait_for_function("() => document.querySelectorAll('.conversation').length === 1")
    assert chat.page.locator(".conversation").get_attribute("data-id") == str(stored["conversation_id"])
    chat.page.fill("#search", "qwertyuiopasdf")
    chat.page.wait_for_selector("#search-empty:not([hidden])")
    chat.page.fill("#search", "")
    chat.page.wait_for_function("() => document.querySelectorAll('.conversation').length >= 2")
    # The page's own address takes the search, as the API's ?q= does.
    searched = make_page(path=f"/?q={word}")
    searched.page.wait_for_function("() => document.querySelectorAll('.conversation').length === 1")
    assert searched.page.input_value("#search") == word
    assert searched.page.locator(".conversation").get_attribute("data-id") == str(stored["conversation_id"])
    # Bob searching for the same word finds none of Alice's.
    bob = make_page(storage_state=logged_in_state(chat_server.url, "bob"))
    bob.page.fill("#search", word)
    bob.page.wait_for_function(
        "(cid) => !document.querySelector(`.conversation[data-id='${cid}']`) && !document.getElementById('search-empty').hidden",
        arg=stored["conversation_id"],
    )
    assert other


def test_messages_have_timestamps_and_the_sidebar_relative_dates(chat):
    generation_id = chat.send(PROMPT)
    chat.wait_state("ended")
    stored = chat.wait_stored_terminal(generation_id)
    for role in ("user", "assistant"):
        time = chat.page.locator(f".message.{role} .timestamp")
        assert time.get_attribute("datetime").startswith(chat.db("SELECT substr(created_at, 1, 10) FROM chat_message WHERE role = ? AND conversation_id = ?", role, stored["conversation_id"])[0][0])
        assert time.get_attribute("title")  # the full date
        assert time.text_content()
    date = chat.page.locator(f".conversation[data-id='{stored['conversation_id']}'] .conversation-date")
    assert date.text_content() == "now"
    assert date.get_attribute("title")
