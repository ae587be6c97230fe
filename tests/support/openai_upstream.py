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
from dataclasses import dataclass, field

from tests.support.loopback import LoopbackServer

SCENARIOS = ("ok", "json", "error_500", "cut", "stall", "malformed", "error_chunk")
ERROR_500_MESSAGE = "The upstream test server crashed on purpose."
ERROR_CHUNK_MESSAGE = "The upstream test server ran out of capacity mid-answer."
SCENARIO_DIRECTIVE = re.compile(r"\[upstream:(\w+)\]")
REASONING_DIRECTIVE = re.compile(r"\[reasoning:(\w+)\]")
REASONING_DIALECTS = ("deepseek", "vllm", "vllm_legacy", "ollama", "both")


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens that join back to exactly the text."""
    return re.findall(r"\s*\S+", text)


def echo_reply(prompt: str) -> str:
    """The answer the "ok" scenario streams for a prompt."""
    return " ".join(["Echo:", *prompt.split()])


def reasoning_reply(prompt: str) -> str:
    """The reasoning streamed before the answer to a prompt."""
    return f"The user wrote {len(prompt.split())} words; I will echo them back."


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


def json_reply(prompt: str) -> str:
    """The JSON object the "json" scenario streams for a prompt."""
    return json.dumps({"echo": " ".join(prompt.split()), "word_count": len(prompt.split())})


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict | None
    # True when the client went away before the response was complete.
    client_gone: bool = False

    @property
    def prompt(self) -> str:
        """The last user message's content."""
        user = [m for m in (self.body or {}).get("messages", []) if m.get("role") == "user"]
        return str(user[-1].get("content", "")) if user else ""


@dataclass
class OpenAIUpstream(LoopbackServer):
    """A streaming `/v1/chat/completions` server; `start()`/`stop()` or use `with`."""

    thread_name = "openai-upstream"

    scenario: str = "ok"
    tokens_before_fault: int = 3
    token_delay_s: float = 0.0
    port: int = 0
    # With chunked framing a cut is an HTTP-level error; without, the body just ends.
    chunked: bool = True
    # Raw SSE text sent before the first chunk, e.g. ": comment\n\n".
    preamble: str = ""
    malformed_data: str = "{not json"
    # One of REASONING_DIALECTS: answers start with reasoning, sent as that server does.
    reasoning: str | None = None
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._handlers: set[asyncio.Task] = set()
        self._idle = threading.Condition()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no connection is open; blocking, so await it via `asyncio.to_thread`."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._handlers, timeout)

    async def _close_connections(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._idle:
            self._handlers.add(asyncio.current_task())
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            respond = asyncio.ensure_future(self._respond(request, writer))
            # The request is fully read, so anything further on the socket means the client left.
            gone = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({respond, gone}, return_when=asyncio.FIRST_COMPLETED)
            error = respond.exception() if respond.done() else None
            request.client_gone = not respond.done() or error is not None
            for task in (respond, gone):
                task.cancel()
            await asyncio.gather(respond, gone, return_exceptions=True)
            if error is not None and not isinstance(error, ConnectionError):
                raise error
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that hangs up or sends junk just loses its connection
        finally:
            writer.close()
            with self._idle:
                self._handlers.discard(asyncio.current_task())
                self._idle.notify_all()

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if (request.method, request.path) != ("POST", "/v1/chat/completions"):
            return await _send_json(writer, 404, _error_body(f"No route {request.method} {request.path}", "not_found"))
        if request.body is None:
            return await _send_json(writer, 400, _error_body("Body must be a JSON object", "invalid_request_error"))
        directive = SCENARIO_DIRECTIVE.search(request.prompt)
        scenario = directive.group(1) if directive else self.scenario
        if scenario not in SCENARIOS:
            return await _send_json(writer, 400, _error_body(f"Unknown scenario {scenario!r}", "invalid_request_error"))
        if scenario == "error_500":
            return await _send_json(writer, 500, _error_body(ERROR_500_MESSAGE, "server_error"))

        directive = REASONING_DIRECTIVE.search(request.prompt)
        dialect = directive.group(1) if directive else self.reasoning
        if dialect not in (None, *REASONING_DIALECTS):
            return await _send_json(writer, 400, _error_body(f"Unknown dialect {dialect!r}", "invalid_request_error"))

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
            data = text.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
            await writer.drain()

        async def send_chunk(delta: dict, finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            usage = {"usage": None} if include_usage else {}
            await send(_sse({**base, "choices": [choice], **usage}))

        framing = "Transfer-Encoding: chunked\r\n" if self.chunked else ""
        writer.write(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            f"Cache-Control: no-cache\r\nConnection: close\r\n{framing}\r\n".encode()
        )
        if self.preamble:
            await send(self.preamble)
        if dialect == "deepseek":
            await send_chunk({"role": "assistant", "content": None, "reasoning_content": ""})
        elif dialect != "ollama":  # Ollama names the role in its first token's chunk instead
            await send_chunk({"role": "assistant", "content": ""})
        for index, (reasoning, content) in enumerate(tokens):
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
        if self.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest:
    method, path, _version = (await reader.readline()).decode("latin-1").split()
    headers = {}
    while line := (await reader.readline()).decode("latin-1").strip():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", 0)))
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return RecordedRequest(method, path, headers, body if isinstance(body, dict) else None)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error_body(message: str, error_type: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


async def _send_json(writer: asyncio.StreamWriter, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    reason = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    await writer.drain()


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
