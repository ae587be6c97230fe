"""Continue, retry and mark-as-interrupted, run by an operator in the admin of a real server.

A continuation fills the same assistant message, numbers its tokens on from
where the generation it continues stopped, and so reads, to a client that
resumes with Last-Event-ID = old.last_seq, as one seamless answer.
"""

import json

import pytest

from chat.llm import CONTINUE_INSTRUCTION, ChatMessage
from chat.llm.simulated import SimulatedProvider
from tests.support.client import logged_in, shown_text
from tests.support.openai_upstream import OpenAIUpstream, echo_reply
from tests.support.operator import admin_action, operator_client, started_id

PROMPT = "How should a mobile client resume an answer after losing the network?"


def ids(events) -> list[int]:
    return [int(e.id) for e in events if e.event in ("token", "snapshot")]


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(token_delay_s=0.01) as server:
        yield server


async def test_continue_reads_as_one_seamless_answer(start_server, backend):
    server = start_server(backend, fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20, CHAT_SIMULATED_POINTS=6)
    async with await logged_in(server) as alice, await operator_client(server) as ops:
        old = await alice.ask(PROMPT)
        first = await alice.read_stream(old["id"], max_events=4)
        await alice.post(f"/api/generations/{old['id']}/cancel")
        rest = await alice.read_stream(old["id"], last_event_id=first.last_id)
        stopped = await alice.generation(old["id"])
        partial, last = first.text + rest.text, stopped["last_seq"]
        assert rest.terminal.event == "cancelled" and partial and last >= 4

        new_id = started_id(await admin_action(ops, "continue_generations", old["id"]))
        # A client that has nothing connects while the continuation runs.
        fresh = await alice.read_stream(new_id, last_event_id="0")
        # The first client goes on from the last id it has.
        seamless = await alice.read_stream(new_id, last_event_id=str(last))
        stored = await alice.generation(new_id)
        old_after = await alice.generation(old["id"])
        again = await admin_action(ops, "continue_generations", old["id"])
        detail = await ops.http.get(f"/admin/chat/generation/{new_id}/change/")

    assert stored["status"] == "complete" and seamless.terminal.event == "done"
    assert stored["assistant_message_id"] == old["assistant_message_id"], "the same assistant message"
    assert stored["first_seq"] == last + 1 and stored["last_seq"] > last
    # Tokens only (no snapshot), ids increasing; a late client may get the first ones as one replayed chunk.
    assert seamless.events[0].event == "token" and ids(seamless.events) == sorted(set(ids(seamless.events)))
    assert seamless.terminal.id == str(stored["last_seq"])
    assert partial + seamless.text == stored["text"], "one seamless answer"
    assert (old_after["status"], old_after["last_seq"]) == ("cancelled", last), "the old generation is unchanged"

    snapshot = fresh.events[0]
    assert (snapshot.event, snapshot.id) == ("snapshot", str(last))
    assert json.loads(snapshot.data) == {"seq": last, "text": partial}
    assert fresh.events[1].event == "token" and ids(fresh.events)[1] > last
    assert shown_text(fresh.events) == stored["text"]

    assert again == [("warning", f"Generation {old['id']} was already continued by {new_id}; continue that one.")]
    assert f"/admin/chat/generation/{old['id']}/change/" in detail.text, "the detail page links the lineage"


async def test_continue_asks_the_model_to_go_on_from_the_partial_text(start_server, upstream):
    server = start_server(fresh=True, CHAT_LLM_PROVIDER="openai", CHAT_OPENAI_BASE_URL=upstream.base_url)
    prompt = "[upstream:cut] tell me how resumable streams work"
    async with await logged_in(server) as alice, await operator_client(server) as ops:
        old = await alice.ask(prompt)
        cut = await alice.read_stream(old["id"])
        assert json.loads(cut.terminal.data)["reason"] == "upstream_error"
        partial, last = cut.text, int(cut.terminal.id)

        new_id = started_id(await admin_action(ops, "continue_generations", old["id"]))
        rest = await alice.read_stream(new_id, last_event_id=str(last))
        stored = await alice.generation(new_id)

        sent = [(m["role"], m["content"]) for m in upstream.requests[-1].body["messages"]]
        assert sent == [("user", prompt), ("assistant", partial), ("user", CONTINUE_INSTRUCTION)]
        assert stored["text"] == partial + rest.text == partial + echo_reply(CONTINUE_INSTRUCTION)

        # Retention pruned the old tokens: resuming it gives its own text in a snapshot, then the
        # continuation's tokens still follow on from its last id.
        await admin_action(ops, "delete_token_chunks", old["id"])
        old_again = await alice.read_stream(old["id"])
        rest_again = await alice.read_stream(new_id, last_event_id=old_again.terminal.id)
        assert [(e.event, e.id) for e in old_again.events] == [("snapshot", str(last)), ("interrupted", str(last))]
        assert shown_text(old_again.events + rest_again.events) == stored["text"]

        # Both pruned: every snapshot carries the answer so far, and the last one is the whole answer.
        await admin_action(ops, "delete_token_chunks", new_id)
        old_pruned = await alice.read_stream(old["id"])
        new_pruned = await alice.read_stream(new_id, last_event_id=old_pruned.terminal.id)
        assert [e.event for e in new_pruned.events] == ["snapshot", "done"]
        assert shown_text(old_pruned.events + new_pruned.events) == stored["text"]


async def test_retry_answers_the_same_prompt_in_a_new_message(start_server):
    server = start_server(fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20)
    async with await logged_in(server) as alice, await operator_client(server) as ops:
        old = await alice.ask(PROMPT)
        first = await alice.read_stream(old["id"], max_events=3)
        await alice.post(f"/api/generations/{old['id']}/cancel")
        old_stopped = await alice.generation(old["id"])
        new_id = started_id(await admin_action(ops, "retry_generations", old["id"]))
        read = await alice.read_stream(new_id)
        stored = await alice.generation(new_id)
        old_after = await alice.generation(old["id"])
    assert read.terminal.event == "done" and read.text == stored["text"]
    assert stored["user_message_id"] == old["user_message_id"]
    assert stored["assistant_message_id"] != old["assistant_message_id"]
    assert stored["first_seq"] == 1
    # A retry is a new version of the answer: the simulated model writes the second version, deterministically.
    second_version = SimulatedProvider(tokens_per_s=0, variant=1).answer_tokens([ChatMessage("user", PROMPT)])
    assert stored["text"] == "".join(second_version[:160]) != old_stopped["text"]
    assert first.text and old_stopped["text"].startswith(first.text)
    assert old_after == old_stopped, "the retried generation is left as it was"


async def test_mark_interrupted_stops_a_running_generation_for_its_followers(start_server, backend):
    server = start_server(backend, fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20, CHAT_SIMULATED_POINTS=6)
    async with await logged_in(server) as alice, await operator_client(server) as ops:
        generation = await alice.ask(PROMPT)
        first = await alice.read_stream(generation["id"], max_events=3)
        messages = await admin_action(ops, "mark_interrupted", generation["id"])
        rest = await alice.read_stream(generation["id"], last_event_id=first.last_id)
        stored = await alice.generation(generation["id"])
        again = await admin_action(ops, "mark_interrupted", generation["id"])
    assert messages[0][0] == "success" and "marked as interrupted" in messages[0][1]
    assert (stored["status"], stored["reason"]) == ("interrupted", "operator")
    assert json.loads(rest.terminal.data)["reason"] == "operator"
    assert first.text + rest.text == stored["text"] and stored["last_seq"] < 100
    assert again == [("warning", f"Generation {generation['id']} had already ended.")]


async def test_the_owner_continues_an_interrupted_answer_through_the_api(start_server):
    """POST /api/generations/<id>/continue: the page's Continue button; the owner's only, and a clear 409."""
    server = start_server(fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20, CHAT_SIMULATED_POINTS=6)
    async with await logged_in(server) as alice, await logged_in(server, "bob") as bob:
        old = await alice.ask(PROMPT)
        running = await alice.post(f"/api/generations/{old['id']}/continue")
        first = await alice.read_stream(old["id"], max_events=4)
        await alice.post(f"/api/generations/{old['id']}/cancel")
        stopped = await alice.wait_terminal(old["id"])

        strangers = await bob.post(f"/api/generations/{old['id']}/continue")
        response = await alice.post(f"/api/generations/{old['id']}/continue")
        again = await alice.post(f"/api/generations/{old['id']}/continue")
        continuation = response.json()
        rest = await alice.read_stream(continuation["id"], last_event_id=str(stopped["last_seq"]))
        stored = await alice.generation(continuation["id"])
        complete = await alice.post(f"/api/generations/{continuation['id']}/continue")

    assert running.status_code == 409 and running.json()["error"]["code"] == "not_continuable"
    assert "is still" in running.json()["error"]["message"]
    assert strangers.status_code == 404, "another user's answer is not found"
    assert response.status_code == 201, response.text
    assert continuation["assistant_message_id"] == old["assistant_message_id"]
    assert continuation["first_seq"] == stopped["last_seq"] + 1
    assert again.status_code == 409 and f"already continued by {continuation['id']}" in again.json()["error"]["message"]
    assert not [e for e in rest.events if e.event == "snapshot"] and rest.terminal.event == "done"
    assert stored["status"] == "complete" and stored["text"] == stopped["text"] + rest.text
    assert stored["text"].startswith(first.text)
    assert complete.status_code == 409 and "nothing to continue" in complete.json()["error"]["message"]
