"""Stream answers from any OpenAI-compatible `/chat/completions` endpoint."""

import json
from collections.abc import AsyncIterator

import httpx
from django.conf import settings

from .base import REASONING, ChatMessage, Delta, Finish, Provider, ProviderError

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Enough to recognise a proxy's HTML error page without flooding the logs.
ERROR_BODY_CHARS = 300


class OpenAIProvider(Provider):
    """Speak the OpenAI streaming chat API (OpenAI, Ollama, vLLM, llama.cpp, ...)."""

    name = "openai"

    def __init__(
        self, *, base_url: str, api_key: str, model: str, connect_timeout: float, read_timeout: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        # The read timeout bounds each wait for the next bytes, not the whole answer.
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)

    @classmethod
    def from_settings(cls, *, model: str = "", variant: int = 0, options: dict | None = None) -> "OpenAIProvider":
        return cls(
            base_url=settings.CHAT_OPENAI_BASE_URL,
            api_key=settings.CHAT_OPENAI_API_KEY,
            model=model or settings.CHAT_OPENAI_MODEL,
            connect_timeout=settings.CHAT_OPENAI_CONNECT_TIMEOUT_S,
            read_timeout=settings.CHAT_OPENAI_READ_TIMEOUT_S,
        )

    async def stream(
        self, messages: list[ChatMessage], *, response_format: str = "text"
    ) -> AsyncIterator[str | Delta | Finish]:
        payload = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if response_format == "json":
            payload["response_format"] = {"type": "json_object"}
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            # `async with` closes the connection even when the consumer stops early.
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                async with client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=payload, headers=headers
                ) as response:
                    if not response.is_success:
                        raise await _status_error(response)
                    async for item in _read_events(response.aiter_lines()):
                        yield item
        except httpx.HTTPError as exc:
            raise ProviderError(f"upstream request failed: {type(exc).__name__}: {exc}") from exc


async def _read_events(lines: AsyncIterator[str]) -> AsyncIterator[str | Delta | Finish]:
    """Turn SSE lines into reasoning and answer tokens and a final `Finish`; only `[DONE]` ends cleanly."""
    finish_reason, usage = None, {}
    async for line in lines:
        # Blank separators, `:` comments, `event:` and `id:` fields carry nothing for us.
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            yield Finish(reason=finish_reason or "stop", usage=usage)
            return
        reasoning, content, reason, chunk_usage = _read_chunk(data)
        if reasoning:
            yield Delta(REASONING, reasoning)
        if content:
            yield content
        finish_reason = reason or finish_reason
        usage = chunk_usage or usage
    raise ProviderError("upstream stream ended without [DONE]")


def _read_chunk(data: str) -> tuple[str, str, str | None, dict]:
    """Return the reasoning, content, finish reason and usage one `data:` chunk carries.

    Reasoning models send their reasoning in `delta.reasoning_content` (DeepSeek,
    vLLM before 0.16) or `delta.reasoning` (vLLM since, Ollama, OpenRouter); a
    server that sends both, for compatibility, sends the same text twice.
    """
    try:
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError
        if chunk.get("error"):
            raise ProviderError(f"upstream error mid-stream: {_error_message(chunk) or data[:ERROR_BODY_CHARS]}")
        choices = chunk.get("choices") or []
        choice = choices[0] if choices else {}
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        content = delta.get("content") or ""
        reason = choice.get("finish_reason")
        usage = _normalise_usage(chunk.get("usage"))
        if not isinstance(reasoning, str) or not isinstance(content, str) or not isinstance(reason, str | None):
            raise TypeError
    except (ValueError, TypeError, AttributeError, KeyError):
        raise ProviderError(f"malformed chunk from upstream: {data[:ERROR_BODY_CHARS]!r}") from None
    return reasoning, content, reason, usage


def _normalise_usage(usage: dict | None) -> dict:
    if not usage:
        return {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return dict(zip(USAGE_KEYS, (prompt, completion, total)))


def _error_message(body: object) -> str | None:
    """Pull `error.message` (or a bare `error` string, as Ollama sends) from a body."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) and error else None


async def _status_error(response: httpx.Response) -> ProviderError:
    body = (await response.aread()).decode("utf-8", errors="replace")
    try:
        detail = _error_message(json.loads(body))
    except ValueError:
        detail = None
    detail = detail or body[:ERROR_BODY_CHARS].strip() or "empty body"
    return ProviderError(f"upstream returned HTTP {response.status_code}: {detail}")
