"""The AI SDK's own client (`ai` on Node, pinned in tests/ai_sdk) against a live server.

`DefaultChatTransport` sends and reconnects, `readUIMessageStream` builds the
message, exactly as `useChat` does: the message it ends with must be the stored
one, also when the connection is cut mid-answer and the client reconnects.
"""

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from chat.llm.simulated import SimulatedProvider
from tests.conftest import require_service
from tests.support.api import api_client
from tests.support.proxy import FaultProxy

CLIENT_DIR = Path(__file__).parent / "ai_sdk"
SCRIPT = CLIENT_DIR / "chat_client.mjs"
TIMEOUT_S = 120
REASONING_MODEL = SimulatedProvider.REASONING_MODEL


@pytest.fixture(autouse=True)
def node_client():
    require_service(shutil.which("node") is not None, "node is not installed")
    require_service((CLIENT_DIR / "node_modules" / "ai").exists(), "the ai package is not installed (make ai-sdk-deps)")


class NodeChat:
    """One run of chat_client.mjs: its output lines, read as they come."""

    def __init__(self, base: str, token: str, **config):
        self.config = {"base": base, "token": token, **config}
        self.lines: list[dict] = []

    async def run(self, on_line=None) -> list[dict]:
        node = await asyncio.create_subprocess_exec(
            "node", str(SCRIPT), json.dumps(self.config), cwd=CLIENT_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ.copy(),
        )
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while line := await node.stdout.readline():
                    self.lines.append(json.loads(line))
                    if on_line is not None:
                        await on_line(self.lines[-1])
                await node.wait()
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
        stderr = (await node.stderr.read()).decode()
        assert node.returncode == 0, stderr
        return self.lines

    def last(self, kind: str) -> dict:
        found = [line for line in self.lines if line["type"] == kind]
        assert found, f"no {kind!r} line in {self.lines}"
        return found[-1]


def parts(message: dict) -> list[tuple[str, str]]:
    """A UIMessage's reasoning and text parts: what the user sees."""
    return [(part["type"], part["text"]) for part in message["parts"] if part["type"] in ("reasoning", "text")]


async def stored_ui_messages(client, chat_id: str) -> list[dict]:
    response = await client.http.get(f"/api/ai-sdk/chat/{chat_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def slow_server(start_server):
    return start_server("sqlite", CHAT_SIMULATED_TOKENS_PER_S=30)


def stored_parts(generation: dict) -> list[tuple[str, str]]:
    """The parts of a stored answer, read through our own API (GET /api/generations/<id>)."""
    return [(kind, generation[kind]) for kind in ("reasoning", "text") if generation[kind]]


@pytest.mark.parametrize("model", [SimulatedProvider.DEFAULT_MODEL, REASONING_MODEL])
async def test_an_answer_arrives_as_the_stored_message(server, alice_api, model):
    chat_id = uuid.uuid4().hex
    chat = NodeChat(server.url, alice_api.token, chatId=chat_id, scenario="send", text="Tell me about streams",
                    model=model)
    await chat.run()
    message = chat.last("final")["message"]
    stored = await alice_api.wait_terminal(message["metadata"]["generationId"])
    assert message["role"] == "assistant" and message["id"] == str(stored["assistant_message_id"])
    assert parts(message) == stored_parts(stored) and stored["text"]
    assert [kind for kind, _ in parts(message)] == (["reasoning", "text"] if model == REASONING_MODEL else ["text"])
    assert message["metadata"] == {"generationId": stored["id"], "status": "complete"}
    user, answer = await stored_ui_messages(alice_api, chat_id)
    assert parts(user) == [("text", "Tell me about streams")] and user["id"] == "client-user-1", "the client's id"
    assert answer["id"] == message["id"] and parts(answer) == parts(message)
    assert [p["type"] for p in answer["parts"]] == [p["type"] for p in message["parts"]], "step-start too"


@pytest.mark.parametrize(
    "model, part", [(SimulatedProvider.DEFAULT_MODEL, "text"), (REASONING_MODEL, "reasoning"), (REASONING_MODEL, "text")]
)
async def test_a_cut_and_reconnect_end_with_the_same_message(slow_server, model, part):
    """The proxy cuts the response inside a part; reconnectToStream replays it: nothing lost, nothing doubled."""
    async with api_client(slow_server.url, "alice") as alice:
        chat_id = uuid.uuid4().hex
        with FaultProxy(slow_server.port) as proxy:
            cut = False

            async def cut_mid_answer(line):
                nonlocal cut
                if not cut and line["type"] == "update" and line[part]:
                    cut = await asyncio.to_thread(proxy.cut) > 0

            chat = NodeChat(proxy.url, alice.token, chatId=chat_id, scenario="send", text="hello", model=model)
            await chat.run(on_line=cut_mid_answer)
        assert cut, "the proxy cut no live connection"
        before = dict(parts(chat.last("cut")["message"]))
        final = chat.last("final")["message"]
        assert final is not None, "the answer was no longer running: the server answered too fast to cut"
        stored = await alice.wait_terminal(final["metadata"]["generationId"])
        assert parts(final) == stored_parts(stored)
        assert stored[part].startswith(before[part]) and before[part] != stored[part], "cut inside the part"
        assert final["id"] == chat.last("cut")["message"]["id"]
        assert parts((await stored_ui_messages(alice, chat_id))[-1]) == parts(final)


async def test_reconnect_with_nothing_running_is_null(server, alice_api):
    chat_id = uuid.uuid4().hex
    await NodeChat(server.url, alice_api.token, chatId=chat_id, scenario="send", text="hi").run()
    chat = NodeChat(server.url, alice_api.token, chatId=chat_id, scenario="resume")
    await chat.run()
    assert chat.last("final")["message"] is None


async def test_regenerate_makes_a_new_version(server, alice_api):
    chat_id = uuid.uuid4().hex
    first = NodeChat(server.url, alice_api.token, chatId=chat_id, scenario="send", text="hello")
    await first.run()
    answer = first.last("final")["message"]
    history = await stored_ui_messages(alice_api, chat_id)
    again = NodeChat(server.url, alice_api.token, chatId=chat_id, scenario="regenerate", messageId=answer["id"],
                     messages=history)
    await again.run()
    version = again.last("final")["message"]
    old = await alice_api.wait_terminal(answer["metadata"]["generationId"])
    new = await alice_api.wait_terminal(version["metadata"]["generationId"])
    assert version["id"] != answer["id"]
    assert new["user_message_id"] == old["user_message_id"], "an answer to the same message: a version"
    assert parts(version) == [("text", new["text"])] and new["text"] != old["text"]
    assert [m["id"] for m in await stored_ui_messages(alice_api, chat_id)] == [history[0]["id"], version["id"]]


async def test_an_unknown_model_is_a_clear_error(server, alice_api):
    chat = NodeChat(server.url, alice_api.token, chatId=uuid.uuid4().hex, scenario="send", text="hi",
                    model="no-such-model")
    await chat.run()
    error = chat.last("error")
    assert error["status"] == 400
    body = json.loads(error["body"])["error"]
    assert body["code"] == "unknown_model" and "no-such-model" in body["message"]


async def test_use_chats_own_state_ends_with_the_stored_chat_after_a_cut(slow_server):
    """useChat's Chat: sendMessage through a proxy that cuts mid-reasoning, then resumeStream(), as `resume: true` does.

    The chat it holds is the stored one: the same messages and ids, the answer once, its parts whole.
    """
    async with api_client(slow_server.url, "alice") as alice:
        chat_id = uuid.uuid4().hex
        with FaultProxy(slow_server.port) as proxy:
            cut = False

            async def cut_mid_answer(line):
                nonlocal cut
                if not cut and line["type"] == "update" and line["reasoning"]:
                    cut = await asyncio.to_thread(proxy.cut) > 0

            chat = NodeChat(proxy.url, alice.token, chatId=chat_id, scenario="chat", text="hello",
                            model=REASONING_MODEL)
            await chat.run(on_line=cut_mid_answer)
        assert cut, "the proxy cut no live connection"
        assert chat.last("cut")["message"]["role"] == "assistant", "cut mid-answer"
        held = chat.last("chat")
        assert held["status"] == "ready", held
        stored = await stored_ui_messages(alice, chat_id)
        await alice.wait_terminal(stored[-1]["metadata"]["generationId"])
        stored = await stored_ui_messages(alice, chat_id)
        assert [(m["id"], m["role"], parts(m)) for m in held["messages"]] == [
            (m["id"], m["role"], parts(m)) for m in stored
        ]
        assert stored[-1]["metadata"]["status"] == "complete"
        assert [kind for kind, _ in parts(stored[-1])] == ["reasoning", "text"]
