"""A real Anthropic Messages API streaming server on 127.0.0.1, for tests.

It writes the API's own server-sent events over a real socket, byte for byte
as the API sends them (compact JSON, each event named in an `event:` line):

    event: message_start
    data: {"type":"message_start","message":{"id":"msg_...","type":"message","role":"assistant",...}}

    event: content_block_start
    data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

    event: ping
    data: {"type":"ping"}

then `content_block_delta`s (`thinking_delta`, `signature_delta`, `text_delta`),
`content_block_stop`, `message_delta` (stop reason and usage) and
`message_stop`; or, mid-stream, `event: error`. A request asking for thinking
gets a thinking block (the reasoning) before the text block (the answer).

    with AnthropicUpstream(scenario="overloaded", tokens_before_fault=2) as upstream:
        ...  # point a client at upstream.base_url, then inspect upstream.requests

    python -m tests.support.anthropic_upstream --port 8398

As in openai_upstream.py, the scenario is read per request, and a prompt
containing `[upstream:<scenario>]` overrides it for that request.
"""

import argparse
import asyncio
import json
import re
import secrets
import threading
from dataclasses import dataclass

from tests.support.upstream import (
    SCENARIO_DIRECTIVE,
    RecordedRequest,
    StreamingUpstream,
    echo_reply,
    json_reply,
    reasoning_reply,
    send_json,
    split_tokens,
)

# ok, json: a whole answer; max_tokens: the answer stops at `tokens_before_fault`, as at the token limit.
# overloaded: an `error` event after `tokens_before_fault` tokens; cut: the connection closes there;
# stall: nothing more is sent; malformed: `malformed_data` is sent as the next event's data.
# error_<status>: that error status before any event (401, 429, 500 and 529 carry the API's error types).
SCENARIOS = ("ok", "json", "max_tokens", "overloaded", "cut", "stall", "malformed")
ERROR_TYPES = {
    400: ("invalid_request_error", "The request is not valid."),
    401: ("authentication_error", "invalid x-api-key"),
    404: ("not_found_error", "Not found"),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
# The API takes any of its dated versions; the SDK names the one it speaks.
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


@dataclass
class AnthropicUpstream(StreamingUpstream):
    """A streaming `/v1/messages` server; `start()`/`stop()` or use `with`."""

    thread_name = "anthropic-upstream"

    scenario: str = "ok"
    tokens_before_fault: int = 3
    token_delay_s: float = 0.0
    # The x-api-key the server accepts; any other is a 401.
    api_key: str = "sk-ant-test"
    # This many requests get a 529 first, each with `retry-after: 0`, as a busy API answers.
    overloaded_first: int = 0
    malformed_data: str = "{not json"
    # The stop reason of a whole answer.
    stop_reason: str = "end_turn"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if (request.method, request.path) != ("POST", "/v1/messages"):
            return await _send_error(writer, 404, f"No route {request.method} {request.path}")
        if api_key(request) != self.api_key:
            return await _send_error(writer, 401)
        if not API_VERSION.match(request.headers.get("anthropic-version", "")):
            return await _send_error(writer, 400, "anthropic-version: header is required")
        body = request.body
        if body is None or not body.get("stream") or not isinstance(body.get("max_tokens"), int):
            return await _send_error(writer, 400, "This server streams: send stream, max_tokens and messages.")
        directive = SCENARIO_DIRECTIVE.search(request.prompt)
        scenario = directive.group(1) if directive else self.scenario
        status = int(scenario[6:]) if scenario.startswith("error_") and scenario[6:].isdigit() else None
        if status in ERROR_TYPES:
            return await _send_error(writer, status)
        if scenario not in SCENARIOS:
            return await _send_error(writer, 400, f"Unknown scenario {scenario!r}")
        if self.overloaded_first > 0:
            self.overloaded_first -= 1
            return await _send_error(writer, 529, headers="retry-after: 0\r\n")
        await self._stream(body, request.prompt, scenario, writer)

    async def _stream(self, body: dict, prompt: str, scenario: str, writer: asyncio.StreamWriter) -> None:
        thinking = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        reply = json_reply(prompt) if scenario == "json" else echo_reply(prompt)
        # (block type, token) in order: the thinking block's, then the text block's.
        tokens = [("thinking", token) for token in split_tokens(reasoning_reply(prompt))] if thinking else []
        tokens += [("text", token) for token in split_tokens(reply)]
        if scenario not in ("ok", "json"):
            tokens = tokens[: self.tokens_before_fault]
        input_tokens = _words(body.get("system")) + sum(_words(m.get("content")) for m in body.get("messages", []))

        async def send(payload: dict) -> None:
            await self.send(writer, f"event: {payload['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n")

        await self.start_event_stream(writer, headers=f"request-id: req_{secrets.token_hex(12)}\r\n")
        message = {
            "id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "content": [],
            "model": body.get("model"), "stop_reason": None, "stop_sequence": None, "usage": _usage(input_tokens, 1),
        }
        await send({"type": "message_start", "message": message})
        block, index = None, -1
        for position, (kind, token) in enumerate(tokens):
            if kind != block:
                if block is not None:
                    await _end_block(send, block, index)
                block, index = kind, index + 1
                await send({"type": "content_block_start", "index": index, "content_block": EMPTY_BLOCKS[kind]})
                if index == 0:
                    await send({"type": "ping"})
            await self.before_token(position)
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            delta = {"type": f"{kind}_delta", kind: token}
            await send({"type": "content_block_delta", "index": index, "delta": delta})

        if scenario == "cut":
            return  # the handler closes the socket mid-block, without message_stop
        if scenario == "stall":
            await asyncio.Event().wait()  # until the client goes away
        if scenario == "malformed":
            await self.send(writer, f"event: content_block_delta\ndata: {self.malformed_data}\n\n")
        elif scenario == "overloaded":
            await send({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        else:
            if block is not None:
                await _end_block(send, block, index)
            stop_reason = "max_tokens" if scenario == "max_tokens" else self.stop_reason
            await send({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": _usage(input_tokens, len(tokens)),
            })
            await send({"type": "message_stop"})
        await self.end_event_stream(writer)


EMPTY_BLOCKS = {"thinking": {"type": "thinking", "thinking": "", "signature": ""}, "text": {"type": "text", "text": ""}}


async def _end_block(send, block: str, index: int) -> None:
    if block == "thinking":  # A thinking block ends with its signature.
        delta = {"type": "signature_delta", "signature": SIGNATURE}
        await send({"type": "content_block_delta", "index": index, "delta": delta})
    await send({"type": "content_block_stop", "index": index})


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def api_key(request: RecordedRequest) -> str | None:
    """The key a request carries: in `x-api-key`, or as a bearer token (as the SDK sends it since 2.x)."""
    bearer = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None)


def _words(content: object) -> int:
    return len(str(content or "").split())


async def _send_error(writer: asyncio.StreamWriter, status: int, message: str = "", headers: str = "") -> None:
    """An error status with the API's error body."""
    error_type, default_message = ERROR_TYPES[status]
    body = {"type": "error", "error": {"type": error_type, "message": message or default_message},
            "request_id": f"req_{secrets.token_hex(12)}"}
    await send_json(writer, status, body, headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Anthropic streaming Messages API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scenario", choices=SCENARIOS, default="ok")
    parser.add_argument("--tokens-before-fault", type=int, default=3)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument("--api-key", default="sk-ant-test")
    args = parser.parse_args(argv)
    upstream = AnthropicUpstream(
        scenario=args.scenario,
        tokens_before_fault=args.tokens_before_fault,
        token_delay_s=args.token_delay_s,
        api_key=args.api_key,
        port=args.port,
    ).start()
    print(f"listening on 127.0.0.1:{upstream.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        upstream.stop()


if __name__ == "__main__":
    main()
