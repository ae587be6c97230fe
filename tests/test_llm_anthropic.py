"""AnthropicProvider against a local server that speaks the Messages API's streaming wire format."""

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
from chat.llm.anthropic import JSON_INSTRUCTION, AnthropicProvider
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.client import logged_in
from tests.support.upstream import echo_reply, json_reply, reasoning_reply, split_tokens
from tests.support.wait import eventually

PROMPT = "tell me about the quiet streams of the north"
MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", PROMPT)]
REPLY_TOKENS = split_tokens(echo_reply(PROMPT))
REASONING_DELTAS = [Delta(REASONING, token) for token in split_tokens(reasoning_reply(PROMPT))]
PROMPT_TOKENS = len("Be brief.".split()) + len(PROMPT.split())
THINKING = {"type": "enabled", "budget_tokens": 2048}


@pytest.fixture
def upstream():
    with AnthropicUpstream(tokens_before_fault=3) as server:
        yield server


def make_provider(upstream, *, api_key="sk-ant-test", thinking=None, read_timeout=5.0, max_retries=0, base_url=None):
    return AnthropicProvider(
        base_url=base_url or upstream.base_url,
        api_key=api_key,
        model="claude-test",
        max_tokens=4096,
        thinking=thinking,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        max_retries=max_retries,
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


def usage(completion: int) -> dict:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion, "total_tokens": PROMPT_TOKENS + completion}


async def test_thinking_streams_as_reasoning_then_the_answer_as_text(upstream):
    items = await collect(make_provider(upstream, thinking=THINKING))

    *tokens, finish = items
    assert tokens == REASONING_DELTAS + REPLY_TOKENS
    assert "".join(token.text for token in tokens[: len(REASONING_DELTAS)]) == reasoning_reply(PROMPT)
    assert "".join(tokens[len(REASONING_DELTAS) :]) == echo_reply(PROMPT)
    assert finish == Finish(reason="stop", usage=usage(len(tokens)))


async def test_request_sends_the_system_prompt_apart_and_the_thinking_config(upstream):
    upstream.api_key = "sk-ant-secret"

    await collect(make_provider(upstream, api_key="sk-ant-secret", thinking=THINKING), messages=[
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "first answer"),
        ChatMessage("user", PROMPT),
    ])

    [request] = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert "sk-ant-secret" in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    assert request.headers["anthropic-version"]
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": PROMPT},
        ],
        "thinking": THINKING,
        "stream": True,
    }


async def test_without_thinking_only_text_streams_and_no_thinking_is_asked(upstream):
    *tokens, finish = await collect(make_provider(upstream), messages=[ChatMessage("user", PROMPT)])

    assert tokens == REPLY_TOKENS
    assert finish.reason == "stop"
    assert "thinking" not in upstream.requests[0].body and "system" not in upstream.requests[0].body


async def test_json_answers_are_asked_for_in_the_system_prompt(upstream):
    upstream.scenario = "json"

    *tokens, finish = await collect(make_provider(upstream), response_format="json")

    assert upstream.requests[0].body["system"] == f"Be brief.\n\n{JSON_INSTRUCTION}"
    assert json.loads("".join(tokens)) == json.loads(json_reply(PROMPT))
    assert finish.reason == "stop"


async def test_json_without_a_system_prompt_sends_the_instruction_alone(upstream):
    await collect(make_provider(upstream), messages=[ChatMessage("user", PROMPT)], response_format="json")

    assert upstream.requests[0].body["system"] == JSON_INSTRUCTION


async def test_the_token_limit_finishes_with_length(upstream):
    upstream.scenario = "max_tokens"

    *tokens, finish = await collect(make_provider(upstream))

    assert tokens == REPLY_TOKENS[:3]
    assert finish == Finish(reason="length", usage=usage(3))


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),  # one we have no name for passes through
    ],
)
async def test_stop_reasons_map_to_finish_reasons(upstream, stop_reason, finish_reason):
    upstream.stop_reason = stop_reason

    *_tokens, finish = await collect(make_provider(upstream))

    assert finish.reason == finish_reason


@pytest.mark.parametrize("thinking", [None, THINKING])
async def test_overloaded_error_event_mid_stream_raises_after_the_tokens_before_it(upstream, thinking):
    upstream.scenario = "overloaded"
    received = []

    with pytest.raises(ProviderError, match="upstream error mid-stream: overloaded_error: Overloaded"):
        await collect(make_provider(upstream, thinking=thinking), received)

    assert received == (REASONING_DELTAS if thinking else REPLY_TOKENS)[:3]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "HTTP 401: authentication_error: invalid x-api-key"),
        (429, "HTTP 429: rate_limit_error: This request would exceed the rate limit"),
        (500, "HTTP 500: api_error: Internal server error"),
        (529, "HTTP 529: overloaded_error: Overloaded"),
    ],
)
async def test_error_status_raises_with_the_apis_error_type_and_message(upstream, status, message):
    upstream.scenario = f"error_{status}"
    received = []

    with pytest.raises(ProviderError, match=message):
        await collect(make_provider(upstream), received)

    assert received == []
    assert len(upstream.requests) == 1, "no retry when none are configured"


async def test_a_wrong_key_is_a_401(upstream):
    with pytest.raises(ProviderError, match="HTTP 401: authentication_error"):
        await collect(make_provider(upstream, api_key="sk-ant-wrong"))


async def test_no_key_fails_before_any_request(upstream):
    with pytest.raises(ProviderError, match="CHAT_ANTHROPIC_API_KEY is not set"):
        await collect(make_provider(upstream, api_key=""))

    assert upstream.requests == []


async def test_an_overloaded_api_is_retried_when_retries_are_configured(upstream):
    upstream.overloaded_first = 1

    *tokens, finish = await collect(make_provider(upstream, max_retries=1))

    assert tokens == REPLY_TOKENS and finish.reason == "stop"
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("chunked", "error"),
    [
        (True, "APIConnectionError"),  # the chunked body is incomplete at the HTTP level
        (False, "ended without message_stop"),  # the body ends cleanly but the event stream does not
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
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}',
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": ["a"]}}',
    ],
)
async def test_malformed_event_raises(upstream, data):
    upstream.scenario, upstream.malformed_data = "malformed", data
    received = []

    with pytest.raises(ProviderError, match="malformed event"):
        await collect(make_provider(upstream), received)

    assert received == REPLY_TOKENS[:3]


async def test_stall_hits_the_read_timeout_and_closes_the_connection(upstream):
    upstream.scenario = "stall"
    received = []

    with pytest.raises(ProviderError, match="APITimeoutError"):
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
    provider = AnthropicProvider(
        base_url=f"http://127.0.0.1:{closed_port}", api_key="k", model="m", max_tokens=10, connect_timeout=2.0,
        read_timeout=2.0,
    )

    with pytest.raises(ProviderError, match="APIConnectionError"):
        await collect(provider)


async def test_get_provider_builds_the_provider_from_settings_and_the_models_options(upstream, settings):
    settings.CHAT_MODELS = json.dumps([
        {"provider": "anthropic", "model": "claude-thinker", "max_tokens": 16000, "thinking": {"budget_tokens": 4096}},
    ])
    settings.CHAT_ANTHROPIC_BASE_URL = upstream.base_url + "/"
    settings.CHAT_ANTHROPIC_API_KEY = "sk-ant-test"
    settings.CHAT_ANTHROPIC_CONNECT_TIMEOUT_S = 1.5
    settings.CHAT_ANTHROPIC_READ_TIMEOUT_S = 7.0
    settings.CHAT_ANTHROPIC_MAX_RETRIES = 3

    provider = get_provider("anthropic", model="claude-thinker")

    assert isinstance(provider, AnthropicProvider)
    assert (provider.name, provider.model, provider.max_tokens) == ("anthropic", "claude-thinker", 16000)
    assert provider.thinking == {"type": "enabled", "budget_tokens": 4096}
    assert (provider.timeout.connect, provider.timeout.read, provider.max_retries) == (1.5, 7.0, 3)
    *tokens, _finish = await collect(provider)
    assert tokens == REASONING_DELTAS + REPLY_TOKENS
    body = upstream.requests[0].body
    assert (body["model"], body["max_tokens"], body["thinking"]) == (
        "claude-thinker", 16000, {"type": "enabled", "budget_tokens": 4096}
    )


def test_a_model_without_options_gets_the_default_token_limit_and_no_thinking(settings):
    settings.CHAT_MODELS = json.dumps([{"provider": "anthropic", "model": "claude-plain"}])
    settings.CHAT_ANTHROPIC_MAX_TOKENS = 1234

    provider = get_provider("anthropic", model="claude-plain")

    assert (provider.max_tokens, provider.thinking) == (1234, None)


def test_upstream_writes_the_apis_event_stream(upstream):
    body = {"model": "m", "max_tokens": 4096, "stream": True, "thinking": THINKING,
            "messages": [{"role": "user", "content": "hi there"}]}

    response = httpx.post(f"{upstream.base_url}/v1/messages", json=body, headers={
        "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["request-id"].startswith("req_")
    events = [block.split("\n") for block in response.text.split("\n\n") if block]
    names = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert all(len(lines) == 2 for lines in events)
    assert [p["type"] for p in payloads] == names
    thinking_tokens, text_tokens = len(split_tokens(reasoning_reply("hi there"))), len(split_tokens("Echo: hi there"))
    assert names == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * (thinking_tokens + 1),
        "content_block_stop", "content_block_start", *["content_block_delta"] * text_tokens, "content_block_stop",
        "message_delta", "message_stop",
    ]
    assert payloads[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert payloads[3]["delta"] == {"type": "thinking_delta", "thinking": "The"}
    assert payloads[3 + thinking_tokens]["delta"]["type"] == "signature_delta"
    assert payloads[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[-2]["usage"]["output_tokens"] == thinking_tokens + text_tokens
    assert response.text.startswith('event: message_start\ndata: {"type":"message_start","message":{"id":"msg_')
    assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_upstream_runs_as_a_standalone_process():
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.anthropic_upstream", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            banner = process.stdout.readline().strip()
            assert banner.startswith("listening on 127.0.0.1:")
            body = {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "ping"}]}
            response = httpx.post(f"http://{banner.removeprefix('listening on ')}/v1/messages", json=body, headers={
                "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})
            assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
        finally:
            process.terminate()


# --- Through a live server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_upstream():
    with AnthropicUpstream(tokens_before_fault=4, token_delay_s=0.01) as server:
        yield server


@pytest.fixture
def anthropic_server(start_server, live_upstream):
    models = [{"provider": "anthropic", "model": "claude-live", "label": "Claude", "max_tokens": 2048}]
    return start_server(
        CHAT_MODELS=json.dumps(models),
        CHAT_ANTHROPIC_BASE_URL=live_upstream.base_url,
        CHAT_ANTHROPIC_API_KEY="sk-ant-test",
        CHAT_ANTHROPIC_MAX_RETRIES=0,
    )


async def test_an_anthropic_model_answers_through_the_server(anthropic_server, live_upstream):
    async with await logged_in(anthropic_server) as client:
        generation = await client.ask("hello streaming world")
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])

    assert read.terminal.event == "done"
    assert (stored["provider"], stored["model"], stored["finish_reason"]) == ("anthropic", "claude-live", "stop")
    assert read.text == stored["text"] == echo_reply("hello streaming world")
    request = live_upstream.requests[-1]
    assert (request.body["model"], request.body["max_tokens"]) == ("claude-live", 2048)


async def test_overloaded_mid_answer_ends_interrupted_with_the_partial_text_kept(anthropic_server):
    prompt = "[upstream:overloaded] tell me a story"
    async with await logged_in(anthropic_server) as client:
        generation = await client.ask(prompt)
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])

    assert (stored["status"], stored["reason"]) == ("interrupted", "upstream_error")
    assert "overloaded_error" in stored["error"]
    assert read.terminal.event == "interrupted"
    assert read.text == stored["text"] == "".join(split_tokens(echo_reply(prompt))[:4])


async def test_overloaded_before_any_token_fails_with_the_status(anthropic_server):
    async with await logged_in(anthropic_server) as client:
        generation = await client.ask("[upstream:error_529] tell me a story")
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])

    assert stored["status"] == "failed" and "HTTP 529: overloaded_error" in stored["error"]
    assert read.terminal.event == "failed"
    assert read.text == stored["text"] == ""
