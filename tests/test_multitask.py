"""A message posted while an answer still runs in the conversation: `multitask` reject, enqueue or interrupt.

Against a real server; the enqueue case answers through a real OpenAI-compatible
upstream, so the request the model got shows what the queued answer knew.
"""

import pytest

from tests.support.client import logged_in
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.upstream import echo_reply

# An answer of a few seconds: still running when the next message comes.
SLOW = {"CHAT_SIMULATED_TOKENS_PER_S": 20, "CHAT_SIMULATED_POINTS": 6}
FIRST = "How should a chat server handle a second message while it answers the first?"
SECOND = "And what if the first answer is stopped?"


async def post(client, conversation_id: int, content: str, **body):
    return await client.post(f"/api/conversations/{conversation_id}/messages", json={"content": content, **body})


async def test_reject_refuses_while_an_answer_runs(start_server, backend):
    server = start_server(backend, **SLOW)
    async with await logged_in(server) as alice:
        conversation = await alice.new_conversation()
        first = await alice.ask(FIRST, conversation_id=conversation)
        refused = await post(alice, conversation, SECOND, multitask="reject")
        await alice.wait_terminal(first["id"])
        accepted = await post(alice, conversation, SECOND, multitask="reject")
        messages = (await alice.http.get(f"/api/conversations/{conversation}/messages")).json()["items"]
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "answer_running" and first["id"] in error["message"]
    assert accepted.status_code == 201, "nothing runs now"
    assert [m["content"] for m in messages if m["role"] == "user"] == [FIRST, SECOND], "the refused one was not stored"


async def test_interrupt_stops_the_running_answer_keeping_its_text_then_answers(start_server, backend):
    server = start_server(backend, **SLOW)
    async with await logged_in(server) as alice:
        conversation = await alice.new_conversation()
        first = await alice.ask(FIRST, conversation_id=conversation)
        seen = await alice.read_stream(first["id"], max_events=5)
        response = await post(alice, conversation, SECOND, multitask="interrupt")
        second = response.json()["generation"]
        stopped = await alice.generation(first["id"])
        rest = await alice.read_stream(first["id"], last_event_id=seen.last_id)
        read = await alice.read_stream(second["id"])
        answered = await alice.generation(second["id"])
    assert response.status_code == 201, response.text
    assert stopped["status"] == "cancelled" and stopped["text"].startswith(seen.text) and stopped["text"]
    assert seen.text + rest.text == stopped["text"] and rest.terminal.event == "cancelled"
    assert answered["status"] == "complete" and read.text == answered["text"]


@pytest.fixture(scope="module")
def slow_upstream():
    with OpenAIUpstream(token_delay_s=0.15) as upstream:
        yield upstream


async def test_enqueue_answers_after_the_running_answer_with_it_in_the_history(start_server, slow_upstream):
    server = start_server(fresh=True, CHAT_LLM_PROVIDER="openai", CHAT_OPENAI_BASE_URL=slow_upstream.base_url)
    async with await logged_in(server) as alice:
        conversation = await alice.new_conversation()
        first = await alice.ask(FIRST, conversation_id=conversation)
        response = await post(alice, conversation, SECOND, multitask="enqueue")
        queued = response.json()["generation"]
        read = await alice.read_stream(queued["id"])  # waits in the queue, then streams
        before = await alice.generation(first["id"])
        after = await alice.generation(queued["id"])
        history = [(m["role"], m["content"]) for m in slow_upstream.requests[-1].body["messages"]]
        again = await post(alice, conversation, "A third, with nothing running", multitask="enqueue")
    assert response.status_code == 201 and queued["status"] == "queued"
    assert before["status"] == after["status"] == "complete"
    assert before["finished_at"] <= after["first_token_at"], "it started once the first had ended"
    assert read.text == after["text"] == echo_reply(SECOND) and read.terminal.event == "done"
    assert history == [("user", FIRST), ("assistant", echo_reply(FIRST)), ("user", SECOND)], "the whole first answer"
    assert again.json()["generation"]["status"] == "streaming", "nothing to wait for: answered at once"
