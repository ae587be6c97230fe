"""A real OpenAI-compatible streaming server on 127.0.0.1, for tests.

It speaks genuine `chat.completion.chunk` SSE over a real socket, from a
background thread with its own event loop, so sync tests, async tests and
other processes can all use it:

    with OpenAIUpstream(scenario="cut", tokens_before_fault=2) as upstream:
        ...  # point a client at upstream.base_url, then inspect upstream.requests

    python -m tests.support.openai_upstream --port 8399 --scenario ok

The scenario is read per request, so tests may change it between requests. A
prompt containing `[upstream:<scenario>]` overrides it for that request, which
lets tests pick faults in a standalone upstream they cannot reconfigure.

With a `reasoning` dialect (or `[reasoning:<dialect>]` in the prompt) every
answer is preceded by reasoning tokens, in the chunks that server sends:
`deepseek` (`reasoning_content`, the other field null), `vllm` (`reasoning`,
vLLM since 0.16), `vllm_legacy` (`reasoning_content`, vLLM before), `ollama`
(`reasoning` beside an empty `content`), `both` (the same text in both fields).
A fault after `tokens_before_fault` counts reasoning and answer tokens alike.
"""

import argparse
import asyncio
import json
import re
import threading
import time
import uuid
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

SCENARIOS = ("ok", "json", "error_500", "cut", "stall", "malformed", "error_chunk")
ERROR_500_MESSAGE = "The upstream test server crashed on purpose."
ERROR_CHUNK_MESSAGE = "The upstream test server ran out of capacity mid-answer."
REASONING_DIRECTIVE = re.compile(r"\[reasoning:(\w+)\]")
REASONING_DIALECTS = ("deepseek", "vllm", "vllm_legacy", "ollama", "both")


def reasoning_delta(dialect: str, text: str | None, content: str | None) -> dict:
    """A chunk's delta as `dialect`'s server writes it: reasoning `text`, or answer `content`."""
    if dialect == "deepseek":
        return {"content": content, "reasoning_content": text}
    if dialect == "ollama":
        return {"content": content or "", **({"reasoning": text} if text is not None else {})}
    if text is None:
        return {"content": content}
    if dialect == "both":
        return {"reasoning": text, "reasoning_content": text}
    return {"reasoning_content" if dialect == "vllm_legacy" else "reasoning": text}


@dataclass
class OpenAIUpstream(StreamingUpstream):
    """A streaming `/v1/chat/completions` server; `start()`/`stop()` or use `with`."""

    thread_name = "openai-upstream"

    scenario: str = "ok"
    tokens_before_fault: int = 3
    token_delay_s: float = 0.0
    # Raw SSE text sent before the first chunk, e.g. ": comment\n\n".
    preamble: str = ""
    malformed_data: str = "{not json"
    # One of REASONING_DIALECTS: answers start with reasoning, sent as that server does.
    reasoning: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if (request.method, request.path) != ("POST", "/v1/chat/completions"):
            return await send_json(writer, 404, _error_body(f"No route {request.method} {request.path}", "not_found"))
        if request.body is None:
            return await send_json(writer, 400, _error_body("Body must be a JSON object", "invalid_request_error"))
        directive = SCENARIO_DIRECTIVE.search(request.prompt)
        scenario = directive.group(1) if directive else self.scenario
        if scenario not in SCENARIOS:
            return await send_json(writer, 400, _error_body(f"Unknown scenario {scenario!r}", "invalid_request_error"))
        if scenario == "error_500":
            return await send_json(writer, 500, _error_body(ERROR_500_MESSAGE, "server_error"))

        directive = REASONING_DIRECTIVE.search(request.prompt)
        dialect = directive.group(1) if directive else self.reasoning
        if dialect not in (None, *REASONING_DIALECTS):
            return await send_json(writer, 400, _error_body(f"Unknown dialect {dialect!r}", "invalid_request_error"))

        body = request.body
        reply = json_reply(request.prompt) if scenario == "json" else echo_reply(request.prompt)
        # (reasoning, content) per chunk, one of them None.
        tokens = [(None, token) for token in split_tokens(reply)]
        if dialect:
            tokens = [(token, None) for token in split_tokens(reasoning_reply(request.prompt))] + tokens
        if scenario not in ("ok", "json"):
            tokens = tokens[: self.tokens_before_fault]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or "upstream-test-model",
            "system_fingerprint": "fp_upstream_test",
        }

        async def send(text: str) -> None:
            await self.send(writer, text)

        async def send_chunk(delta: dict, finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            usage = {"usage": None} if include_usage else {}
            await send(_sse({**base, "choices": [choice], **usage}))

        await self.start_event_stream(writer)
        if self.preamble:
            await send(self.preamble)
        if dialect == "deepseek":
            await send_chunk({"role": "assistant", "content": None, "reasoning_content": ""})
        elif dialect != "ollama":  # Ollama names the role in its first token's chunk instead
            await send_chunk({"role": "assistant", "content": ""})
        for index, (reasoning, content) in enumerate(tokens):
            await self.before_token(index)
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            delta = reasoning_delta(dialect, reasoning, content) if dialect else {"content": content}
            if dialect == "ollama" and index == 0:
                delta = {"role": "assistant", **delta}
            await send_chunk(delta)

        if scenario == "cut":
            return  # the handler closes the socket without [DONE] or the final chunk
        if scenario == "stall":
            await asyncio.Event().wait()  # until the client goes away
        if scenario == "malformed":
            await send(f"data: {self.malformed_data}\n\n")
        elif scenario == "error_chunk":
            error = _error_body(ERROR_CHUNK_MESSAGE, "server_error", code="overloaded")
            await send(_sse(error))
        else:
            await send_chunk({}, "stop")
            if include_usage:
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt_tokens + len(tokens),
                }
                await send(_sse({**base, "choices": [], "usage": usage}))
        await send("data: [DONE]\n\n")
        await self.end_event_stream(writer)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error_body(message: str, error_type: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI streaming API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scenario", choices=SCENARIOS, default="ok")
    parser.add_argument("--tokens-before-fault", type=int, default=3)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument("--reasoning", choices=REASONING_DIALECTS, help="start every answer with reasoning")
    args = parser.parse_args(argv)
    upstream = OpenAIUpstream(
        scenario=args.scenario,
        tokens_before_fault=args.tokens_before_fault,
        token_delay_s=args.token_delay_s,
        reasoning=args.reasoning,
        port=args.port,
    ).start()
    print(f"listening on 127.0.0.1:{upstream.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        upstream.stop()


if __name__ == "__main__":
    main()
