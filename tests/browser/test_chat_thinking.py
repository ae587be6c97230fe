"""The Thinking block in real Chromium: a `simulated-reasoning` answer thinks, then answers.

Open and "Thinking…" while the model thinks, collapsed with its duration once
the text starts; the reasoning and the text shown are the stored ones after
a stream, a refresh mid-reasoning, and the fallback; Copy copies the answer only.
"""

import math
import re

import pytest

from chat.llm.simulated import SimulatedProvider
from tests.browser.chat_page import (
    ANSWER_STREAMS,
    FAST_CLIENT,
    assert_shows_stored,
    chat_pages,
    logged_in_state,
    stream_connections,
)
from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.timeout(90)

MODEL = SimulatedProvider.REASONING_MODEL
# About 30 reasoning tokens, then 40-70 of text, at 10 tokens/s: some 3 s of thinking, for a test to act in.
THINKING_ENV = {
    "CHAT_SIMULATED_TOKENS_PER_S": 10,
    "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0.05,
    "CHAT_SIMULATED_POINTS": 1,
}
# The product's stall timer: a busy machine may pause a healthy stream for longer than the tests' 1.2 s.
CLIENT = {**FAST_CLIENT, "stallMs": 10_000}
LAST_ANSWER = ".message.assistant:last-of-type"
THOUGHT_FOR = re.compile(r"^Thought for \d+ s$")

# Every change of the last answer's Thinking block, as the page shows it: (summary, open, reasoning and text lengths).
RECORD_THINKING = """
new MutationObserver(() => {
  const answer = [...document.querySelectorAll('.message.assistant')].at(-1);
  const block = answer?.querySelector('details.thinking');
  if (!block) return;
  const seen = {
    summary: block.querySelector('summary').textContent,
    open: block.open,
    reasoning: block.querySelector('.thinking-text').textContent.length,
    text: answer.querySelector('.content').textContent.length,
  };
  const shown = (window.thinkingShown ??= []);
  if (JSON.stringify(shown.at(-1)) !== JSON.stringify(seen)) shown.push(seen);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


@pytest.fixture(scope="module")
def thinking_server(start_server):
    return start_server("sqlite", **THINKING_ENV)


@pytest.fixture(scope="module")
def thinking_proxy(thinking_server):
    with FaultProxy(thinking_server.port) as proxy:
        yield proxy


@pytest.fixture
def make_page(chromium, thinking_server, thinking_proxy):
    state = logged_in_state(thinking_server.url)
    with chat_pages(
        chromium, thinking_proxy.url, thinking_server.database_url, client_config=CLIENT, storage_state=state,
        init_script=f"document.addEventListener('DOMContentLoaded', () => {{ {RECORD_THINKING} }});",
    ) as make:
        yield make
    thinking_proxy.reset()


def ask(chat, prompt: str) -> str:
    """Pick the reasoning model and send `prompt`; return the generation's id."""
    chat.page.select_option("#model", MODEL)
    return chat.send(prompt)


def wait_thinking(chat) -> None:
    """Until the answer shows some reasoning and no text yet."""
    chat.page.wait_for_function(
        f"""() => {{
            const answer = document.querySelector('{LAST_ANSWER}');
            return answer?.querySelector('.thinking-text')?.textContent && !answer.querySelector('.content').textContent;
        }}"""
    )


def stored(chat, generation_id: str) -> dict:
    """The ended generation as the API gives it: GET /api/generations/<id>."""
    chat.wait_stored_terminal(generation_id)
    response = chat.page.request.get(f"{chat.base_url}/api/generations/{generation_id}")
    assert response.ok, response.text()
    return response.json()


def shown_reasoning(chat) -> str:
    return chat.page.locator(LAST_ANSWER).locator(".thinking-text").text_content()


def thinking_block(chat) -> dict:
    block = chat.page.locator(LAST_ANSWER).locator("details.thinking")
    return {"summary": block.locator("summary").text_content(), "open": block.evaluate("(el) => el.open")}


def assert_thought_then_answered(chat, answer: dict) -> None:
    """Every look of the Thinking block the page showed: open and "Thinking…" while there was no text
    (the reasoning only growing), then collapsed with one "Thought for N s" from the first text on."""
    shown = chat.page.evaluate("window.thinkingShown")
    thinking = [s for s in shown if s["text"] == 0]
    answering = [s for s in shown if s["text"] > 0]
    assert thinking and answering, shown
    assert shown == thinking + answering, "no reasoning shown after the text started"
    assert all(s["summary"] == "Thinking…" and s["open"] for s in thinking), thinking
    assert [s["reasoning"] for s in thinking] == sorted(s["reasoning"] for s in thinking)
    assert all(THOUGHT_FOR.match(s["summary"]) and not s["open"] for s in answering), answering
    assert len({s["summary"] for s in answering}) == 1
    assert shown[-1]["reasoning"] == len(answer["reasoning"])


def test_the_block_is_open_while_thinking_then_collapses_with_its_duration(make_page):
    chat = make_page()
    chat.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=chat.base_url)
    generation_id = ask(chat, "Why do rivers bend?")
    chat.wait_state("ended")
    answer = stored(chat, generation_id)
    assert answer["status"] == "complete" and answer["reasoning"] and answer["text"]
    assert_shows_stored(chat, generation_id)
    assert shown_reasoning(chat) == answer["reasoning"]

    assert_thought_then_answered(chat, answer)

    # Copy copies the answer's Markdown, without the reasoning.
    article = chat.page.locator(LAST_ANSWER)
    article.hover()
    article.locator(".copy-answer").click()
    chat.page.wait_for_function("() => document.querySelector('.message.assistant .copy-answer').textContent === 'Copied'")
    assert chat.page.evaluate("() => navigator.clipboard.readText()") == answer["text"]

    # Opened again, the stored answer: collapsed, with the stored time it thought, the stored parts.
    chat.open(f"/?conversation={answer['conversation_id']}")
    seconds = max(1, math.floor(answer["reasoning_ms"] / 1000 + 0.5))  # as the page rounds (Math.round)
    assert thinking_block(chat) == {"summary": f"Thought for {seconds} s", "open": False}
    assert shown_reasoning(chat) == answer["reasoning"]
    assert chat.shown_html() == chat.markdown_html(answer["text"])


def test_a_refresh_mid_reasoning_restores_both_parts_exactly(make_page, thinking_proxy):
    """Regression: the reasoning kept for a refresh first showed collapsed as "Thoughts", then opened."""
    chat = make_page()
    generation_id = ask(chat, "How do glaciers move?")
    wait_thinking(chat)
    # Freeze what the page has (the reasoning so far) while the answer goes on, then reload.
    assert thinking_proxy.stall(ANSWER_STREAMS) >= 1
    saved = chat.page.evaluate(f"() => JSON.parse(sessionStorage.getItem('chat.stream.{generation_id}'))")
    assert saved and saved["reasoning"], f"the page kept no reasoning to resume from: {saved}"
    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready='1']")
    assert chat.generation_id == generation_id
    chat.wait_state("ended")

    answer = stored(chat, generation_id)
    assert_shows_stored(chat, generation_id)
    assert shown_reasoning(chat) == answer["reasoning"]
    # The reloaded page: from the kept reasoning on, open and thinking, then collapsed once the text came.
    assert_thought_then_answered(chat, answer)
    # The reloaded page resumed from the event it had kept, inside the reasoning.
    connections = stream_connections(chat, generation_id)
    assert len(connections) == 2 and connections[1][0] == int(saved["lastEventId"])
    last_reasoning_seq = chat.db(
        "SELECT max(last_seq) FROM chat_tokenchunk WHERE generation_id = ? AND part = 'reasoning'",
        generation_id.replace("-", ""),
    )[0][0]
    assert 0 < connections[1][0] < last_reasoning_seq, (connections, last_reasoning_seq)
    assert saved["text"] == "" and answer["reasoning"].startswith(saved["reasoning"])


def test_the_fallback_mid_reasoning_restores_both_parts(make_page, thinking_proxy):
    """Regression: while the fallback polled the stored answer, the block stayed open on "Thinking…"
    beside the text, and its time counted the polling; the stored text now ends the thinking."""
    chat = make_page(client_config=FAST_CLIENT)
    generation_id = ask(chat, "What makes a good cache?")
    wait_thinking(chat)
    thinking_proxy.refuse(path="/stream")
    thinking_proxy.cut()
    fallback = chat.wait_state("fallback")

    answer = stored(chat, generation_id)
    assert fallback["detail"]["status"] == answer["status"] == "complete"
    assert_shows_stored(chat, generation_id)
    assert shown_reasoning(chat) == answer["reasoning"]
    assert_thought_then_answered(chat, answer)
    assert chat.status()["label"] == "Fallback"
