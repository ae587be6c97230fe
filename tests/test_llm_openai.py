"""OpenAIProvider against a real OpenAI-compatible upstream over a local socket."""

import asyncio
import json
import socket
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest

from chat.llm import REASONING, ChatMessage, Delta, Finish, ProviderError, get_provider
from chat.llm.openai import OpenAIProvider
from tests.support.openai_upstream import (
    ERROR_500_MESSAGE,
    ERROR_CHUNK_MESSAGE,
    REASONING_DIALECTS,
    OpenAIUpstream,
    echo_reply,
    json_reply,
    reasoning_reply,
    split_tokens,
)
from tests.support.wait import eventually

PROMPT = "tell me about the quiet streams of the north"
MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", PROMPT)]
REPLY_TOKENS = split_tokens(echo_reply(PROMPT))
REASONING_DELTAS = [Delta(REASONING, token) for token in split_tokens(reasoning_reply(PROMPT))]


@pytest.fixture
def upstream():
    with OpenAIUpstream(tokens_before_fault=3) as server:
        yield server


def make_provider(upstream, *, api_key="sk-test", read_timeout=5.0, base_url=None):
    return OpenAIProvider(
        base_url=base_url or upstream.base_url,
        api_key=api_key,
        model="test-model",
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )


async def collect(provider, received=None, messages=MESSAGES, **kwargs) -> list:
    """Consume a whole stream; `received` keeps what arrived if it raises."""
    received = [] if received is None else received
    async with aclosing(provider.stream(messages, **kwargs)) as stream:
        async for item in stream:
            received.append(item)
    return received


async def wait_idle(upstream) -> bool:
    return await asyncio.to_thread(upstream.wait_idle, 5.0)


async def test_streams_tokens_then_one_finish_with_usage(upstream):
    items = await collect(make_provider(upstream))

    *tokens, finish = items
    assert tokens == REPLY_TOKENS
    assert "".join(tokens) == echo_reply(PROMPT)
    prompt_words = len("Be brief.".split()) + len(PROMPT.split())
    assert finish == Finish(
        reason="stop",
        usage={
            "prompt_tokens": prompt_words,
            "completion_tokens": len(REPLY_TOKENS),
            "total_tokens": prompt_words + len(REPLY_TOKENS),
        },
    )


@pytest.mark.parametrize("dialect", REASONING_DIALECTS)
async def test_reasoning_streams_as_reasoning_deltas_before_the_answer(upstream, dialect):
    upstream.reasoning = dialect

    *tokens, finish = await collect(make_provider(upstream))

    # `both` sends each reasoning token in two fields: it still counts once.
    assert tokens == REASONING_DELTAS + REPLY_TOKENS
    assert "".join(t.text for t in tokens[: len(REASONING_DELTAS)]) == reasoning_reply(PROMPT)
    assert finish.reason == "stop"
    assert finish.usage["completion_tokens"] == len(REASONING_DELTAS) + len(REPLY_TOKENS)


async def test_cut_during_reasoning_keeps_the_reasoning_before_the_cut(upstream):
    upstream.scenario, upstream.reasoning = "cut", "deepseek"
    received = []

    with pytest.raises(ProviderError, match="RemoteProtocolError"):
        await collect(make_provider(upstream), received)

    assert received == REASONING_DELTAS[:3]


async def test_reasoning_then_a_cut_in_the_answer_keeps_both_parts(upstream):
    upstream.scenario, upstream.reasoning = "error_chunk", "vllm"
    upstream.tokens_before_fault = len(REASONING_DELTAS) + 2
    received = []

    with pytest.raises(ProviderError, match=ERROR_CHUNK_MESSAGE):
        await collect(make_provider(upstream), received)

    assert received == REASONING_DELTAS + REPLY_TOKENS[:2]


async def test_request_carries_model_messages_stream_flags_and_bearer_key(upstream):
    await collect(make_provider(upstream, api_key="sk-secret"))

    [request] = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-secret"
    assert request.body == {
        "model": "test-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_no_authorization_header_without_a_key(upstream):
    await collect(make_provider(upstream, api_key=""))

    assert "authorization" not in upstream.requests[0].headers


async def test_json_response_format_is_passed_upstream(upstream):
    upstream.scenario = "json"

    *tokens, finish = await collect(make_provider(upstream), response_format="json")

    assert upstream.requests[0].body["response_format"] == {"type": "json_object"}
    assert len(tokens) > 1
    assert json.loads("".join(tokens)) == json.loads(json_reply(PROMPT))
    assert finish.reason == "stop"


async def test_error_status_raises_with_the_upstream_error_message(upstream):
    upstream.scenario = "error_500"
    received = []

    with pytest.raises(ProviderError, match="HTTP 500") as excinfo:
        await collect(make_provider(upstream), received)

    assert ERROR_500_MESSAGE in str(excinfo.value)
    assert received == []


async def test_wrong_base_url_reports_the_404_message(upstream):
    provider = make_provider(upstream, base_url=upstream.base_url.removesuffix("/v1"))

    with pytest.raises(ProviderError, match=r"HTTP 404: No route POST /chat/completions"):
        await collect(provider)


@pytest.mark.parametrize(
    ("chunked", "error"),
    [
        (True, "RemoteProtocolError"),  # the chunked body is incomplete at the HTTP level
        (False, r"ended without \[DONE\]"),  # the body ends cleanly but the SSE stream does not
    ],
)
async def test_cut_raises_after_yielding_the_tokens_before_the_cut(upstream, chunked, error):
    upstream.scenario, upstream.chunked = "cut", chunked
    received = []

    with pytest.raises(ProviderError, match=error):
        await collect(make_provider(upstream), received)

    assert received == REPLY_TOKENS[:3]


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '{"choices": "nope"}',
        '{"choices": [{"delta": {"content": 7}, "finish_reason": null}]}',
        '{"choices": [{"delta": {}, "finish_reason": 3}]}',
        '{"choices": [], "usage": {"prompt_tokens": "many"}}',
        '{"choices": [{"delta": {"reasoning": ["a"]}, "finish_reason": null}]}',
        '{"choices": [{"delta": {"reasoning_content": 1}, "finish_reason": null}]}',
    ],
)
async def test_malformed_chunk_raises(upstream, data):
    upstream.scenario, upstream.malformed_data = "malformed", data
    received = []

    with pytest.raises(ProviderError, match="malformed chunk"):
        await collect(make_provider(upstream), received)

    assert received == REPLY_TOKENS[:3]


async def test_error_chunk_mid_stream_raises_with_its_message(upstream):
    upstream.scenario = "error_chunk"
    received = []

    with pytest.raises(ProviderError, match="mid-stream") as excinfo:
        await collect(make_provider(upstream), received)

    assert ERROR_CHUNK_MESSAGE in str(excinfo.value)
    assert received == REPLY_TOKENS[:3]


async def test_stall_hits_the_read_timeout_and_closes_the_connection(upstream):
    upstream.scenario = "stall"
    received = []

    # Long enough that a starved upstream thread still sends the tokens before the stall in time.
    with pytest.raises(ProviderError, match="ReadTimeout"):
        await collect(make_provider(upstream, read_timeout=2.0), received)

    assert received == REPLY_TOKENS[:3]
    assert await wait_idle(upstream)
    assert upstream.requests[0].client_gone


async def test_consumer_can_cancel_a_stall_and_the_upstream_sees_the_close(upstream):
    upstream.scenario = "stall"
    received = []

    consumer = asyncio.ensure_future(collect(make_provider(upstream, read_timeout=30), received))
    await eventually(lambda: len(received) == 3, what="the tokens before the stall")
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert received == REPLY_TOKENS[:3]
    assert await wait_idle(upstream)
    assert upstream.requests[0].client_gone


async def test_early_close_by_the_consumer_closes_the_upstream_connection(upstream):
    upstream.token_delay_s = 0.05  # the whole answer would take about half a second
    received = []

    async with aclosing(make_provider(upstream).stream(MESSAGES)) as stream:
        async for item in stream:
            received.append(item)
            if len(received) == 2:
                break

    assert received == REPLY_TOKENS[:2]
    assert await wait_idle(upstream)
    assert upstream.requests[0].client_gone


async def test_connection_refused_raises():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    provider = OpenAIProvider(
        base_url=f"http://127.0.0.1:{closed_port}/v1", api_key="", model="m", connect_timeout=2.0, read_timeout=2.0
    )

    with pytest.raises(ProviderError, match="ConnectError"):
        await collect(provider)


async def test_comment_event_and_id_lines_are_ignored(upstream):
    upstream.preamble = ": OPENROUTER PROCESSING\n\nevent: message\nid: 7\nretry: 1000\n\n"

    *tokens, finish = await collect(make_provider(upstream))

    assert tokens == REPLY_TOKENS
    assert finish.reason == "stop"


async def test_prompt_directive_overrides_the_upstream_scenario(upstream):
    messages = [ChatMessage("user", "hello [upstream:error_500]")]

    with pytest.raises(ProviderError, match=ERROR_500_MESSAGE):
        await collect(make_provider(upstream), messages=messages)


async def test_get_provider_builds_the_provider_from_settings(upstream, settings):
    settings.CHAT_OPENAI_BASE_URL = upstream.base_url + "/"
    settings.CHAT_OPENAI_API_KEY = "sk-from-settings"
    settings.CHAT_OPENAI_MODEL = "settings-model"
    settings.CHAT_OPENAI_CONNECT_TIMEOUT_S = 1.5
    settings.CHAT_OPENAI_READ_TIMEOUT_S = 7.0

    provider = get_provider("openai")

    assert isinstance(provider, OpenAIProvider)
    assert (provider.name, provider.model) == ("openai", "settings-model")
    assert (provider.timeout.connect, provider.timeout.read) == (1.5, 7.0)
    *tokens, _finish = await collect(provider)
    assert tokens == REPLY_TOKENS
    request = upstream.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-from-settings"
    assert request.body["model"] == "settings-model"


def test_upstream_serves_sync_clients(upstream):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "stream": True}

    response = httpx.post(f"{upstream.base_url}/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: hi there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_upstream_runs_as_a_standalone_process():
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_upstream", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            banner = process.stdout.readline().strip()
            assert banner.startswith("listening on 127.0.0.1:")
            base_url = f"http://{banner.removeprefix('listening on ')}/v1"
            body = {"model": "m", "messages": [{"role": "user", "content": "ping"}], "stream": True}
            response = httpx.post(f"{base_url}/chat/completions", json=body)
            assert response.text.endswith("data: [DONE]\n\n")
        finally:
            process.terminate()


@pytest.mark.parametrize(
    ("dialect", "first_deltas"),
    [
        (
            "deepseek",
            [{"role": "assistant", "content": None, "reasoning_content": ""}, {"content": None, "reasoning_content": "The"}],
        ),
        ("vllm", [{"role": "assistant", "content": ""}, {"reasoning": "The"}]),
        ("vllm_legacy", [{"role": "assistant", "content": ""}, {"reasoning_content": "The"}]),
        ("ollama", [{"role": "assistant", "content": "", "reasoning": "The"}, {"content": "", "reasoning": " user"}]),
        ("both", [{"role": "assistant", "content": ""}, {"reasoning": "The", "reasoning_content": "The"}]),
    ],
)
def test_upstream_writes_each_servers_reasoning_chunks(upstream, dialect, first_deltas):
    upstream.reasoning = dialect
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "stream": True}

    response = httpx.post(f"{upstream.base_url}/chat/completions", json=body)

    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:2]] == first_deltas
    answer = [c["choices"][0]["delta"] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert "".join(delta["content"] for delta in answer) == "Echo: hi there"
