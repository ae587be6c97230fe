"""Reasoning from real providers' wire formats, end to end through a live server.

Anthropic's extended thinking (`thinking_delta` blocks) and an OpenAI-compatible
server's `reasoning_content` (DeepSeek; vLLM's `reasoning`) stream as our
`reasoning` events before the answer's `token` events, are stored apart from
the text, resume exactly from inside the reasoning, and survive an upstream
error mid-reasoning as the partial reasoning.
"""

import json
from dataclasses import dataclass

import pytest

from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.client import assert_ids_increase, logged_in, shown_parts
from tests.support.openai_upstream import ERROR_CHUNK_MESSAGE, OpenAIUpstream
from tests.support.upstream import echo_reply, reasoning_reply, split_tokens

# Both upstreams end a faulty answer after this many tokens, fewer than the reasoning's.
TOKENS_BEFORE_FAULT = 4
# A held answer waits before this token, inside its reasoning.
HELD_AT = 3


@dataclass(frozen=True)
class Route:
    """A model of CHAT_MODELS and how its upstream fails mid-stream."""

    model: str
    upstream_model: str  # the name the upstream is asked for
    fault: str  # the prompt directive for an error event mid-stream
    error: str  # what the generation's stored error then says


CLAUDE = Route("claude-thinker", "claude-live", "[upstream:overloaded]", "overloaded_error: Overloaded")
DEEPSEEK = Route("deepseek-r1", "deepseek-reasoner", "[upstream:error_chunk]", ERROR_CHUNK_MESSAGE)
ROUTES = [pytest.param(CLAUDE, id="anthropic"), pytest.param(DEEPSEEK, id="openai")]


@pytest.fixture(scope="module")
def anthropic_upstream():
    with AnthropicUpstream(tokens_before_fault=TOKENS_BEFORE_FAULT) as server:
        yield server


@pytest.fixture(scope="module")
def openai_upstream():
    with OpenAIUpstream(tokens_before_fault=TOKENS_BEFORE_FAULT, reasoning="deepseek") as server:
        yield server


@pytest.fixture
def upstreams(anthropic_upstream, openai_upstream):
    return {CLAUDE.model: anthropic_upstream, DEEPSEEK.model: openai_upstream}


@pytest.fixture
def server(start_server, anthropic_upstream, openai_upstream):
    thinking = {"budget_tokens": 1024}
    models = [
        {"provider": "anthropic", "model": CLAUDE.upstream_model, "id": CLAUDE.model, "thinking": thinking},
        {"provider": "openai", "model": DEEPSEEK.upstream_model, "id": DEEPSEEK.model},
    ]
    return start_server(
        CHAT_MODELS=json.dumps(models),
        CHAT_ANTHROPIC_BASE_URL=anthropic_upstream.base_url,
        CHAT_ANTHROPIC_API_KEY="sk-ant-test",
        CHAT_ANTHROPIC_MAX_RETRIES=0,
        CHAT_OPENAI_BASE_URL=openai_upstream.base_url,
    )


@pytest.fixture
async def alice(server):
    async with await logged_in(server) as client:
        yield client


@pytest.mark.parametrize(
    ("route", "prompt"),
    [
        pytest.param(CLAUDE, "why do rivers bend", id="anthropic-thinking"),
        pytest.param(DEEPSEEK, "why do rivers bend", id="openai-reasoning_content"),
        pytest.param(DEEPSEEK, "[reasoning:vllm] why do rivers bend", id="openai-reasoning"),
    ],
)
async def test_reasoning_streams_before_the_text_and_is_stored_as_sent(alice, upstreams, route, prompt):
    generation = await alice.ask(prompt, model=route.model)
    read = await alice.read_stream(generation["id"])
    stored = await alice.wait_terminal(generation["id"])

    assert (stored["status"], stored["finish_reason"]) == ("complete", "stop")
    assert (stored["reasoning"], stored["text"]) == (reasoning_reply(prompt), echo_reply(prompt))
    assert (read.reasoning, read.text) == (stored["reasoning"], stored["text"])
    names = [e.event for e in read.events if e.event in ("reasoning", "token")]
    assert names[0] == "reasoning" and names == sorted(names, key=lambda name: name == "token")
    assert_ids_increase(read.part_seqs, last=stored["last_seq"])
    assert stored["last_seq"] == len(split_tokens(stored["reasoning"])) + len(split_tokens(stored["text"]))
    assert read.terminal.event == "done"
    assert upstreams[route.model].requests[-1].body["model"] == route.upstream_model


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cut_every", [1, 3])
async def test_a_connection_cut_mid_reasoning_resumes_exactly(alice, upstreams, route, cut_every):
    """The answer is held inside its reasoning while the first connection reads and drops; every later
    connection resumes by Last-Event-ID, and the whole ends with exactly the stored parts."""
    prompt = f"how do glaciers move (cut every {cut_every})"
    with upstreams[route.model].holding(at=HELD_AT) as upstream:
        generation = await alice.ask(prompt, model=route.model)
        first = await alice.read_stream(generation["id"], max_events=1)
        upstream.release()
    assert [e.event for e in first.events] == ["reasoning"]
    cut_at = int(first.last_id)
    assert 1 <= cut_at <= HELD_AT < len(split_tokens(reasoning_reply(prompt))), "the cut is inside the reasoning"

    rest, _ = await alice.follow_with_cuts(generation["id"], cut_every, last_id=first.last_id)
    stored = await alice.wait_terminal(generation["id"])

    assert (stored["reasoning"], stored["text"]) == (reasoning_reply(prompt), echo_reply(prompt))
    assert shown_parts(first.events + rest) == (stored["text"], stored["reasoning"])
    seqs = [json.loads(e.data)["seq"] for e in first.events + rest if e.event in ("reasoning", "token")]
    assert_ids_increase(seqs, last=stored["last_seq"])
    assert [e.event for e in rest if e.event not in ("reasoning", "token")] == ["done"]


@pytest.mark.parametrize("route", ROUTES)
async def test_an_upstream_error_mid_reasoning_ends_interrupted_with_the_partial_reasoning_kept(alice, route):
    prompt = f"{route.fault} what is beneath the ice"
    generation = await alice.ask(prompt, model=route.model)
    read = await alice.read_stream(generation["id"])
    stored = await alice.wait_terminal(generation["id"])

    partial = "".join(split_tokens(reasoning_reply(prompt))[:TOKENS_BEFORE_FAULT])
    assert (stored["status"], stored["reason"]) == ("interrupted", "upstream_error")
    assert route.error in stored["error"]
    assert (stored["reasoning"], stored["text"]) == (partial, "")
    assert (read.reasoning, read.text) == (partial, "")
    assert read.terminal.event == "interrupted"
    assert_ids_increase(read.part_seqs, last=TOKENS_BEFORE_FAULT)
    replay = await alice.read_stream(generation["id"])
    assert (replay.reasoning, replay.text, replay.terminal.event) == (partial, "", "interrupted")
