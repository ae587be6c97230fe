"""Stream answers from Anthropic's Messages API (Claude), with extended thinking as reasoning.

Through the official SDK, which follows the API's changes, maps its error
statuses and retries what is worth retrying. The stream's events:
`message_start` (input usage), `content_block_start` / `_delta` / `_stop` per
block by index (a `thinking` block's `thinking_delta`s are our reasoning, a
`text` block's `text_delta`s our answer), `message_delta` (stop reason, output
usage), `message_stop`; `ping` and a mid-stream `error` event the SDK handles.
"""

from collections.abc import AsyncIterator

import anthropic
from django.conf import settings

from .base import REASONING, ChatMessage, Delta, Finish, Provider, ProviderError

# Anthropic's stop reasons in the OpenAI terms the rest of the project uses; others pass through.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The API has no JSON mode that takes any object (structured outputs want a schema): it is asked in words.
JSON_INSTRUCTION = (
    "Answer with a single JSON object and nothing else: no text before or after it, and no Markdown code fence."
)
# The API's counts of a prompt's tokens: those read, those written to its cache, and those read from it.
PROMPT_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# The API's least thinking budget.
MIN_THINKING_BUDGET = 1024
THINKING_TYPES = ("enabled", "adaptive", "disabled")
THINKING_DISPLAYS = ("summarized", "omitted")


class AnthropicProvider(Provider):
    """Speak Anthropic's streaming Messages API.

    A model's options (its CHAT_MODELS entry): `max_tokens` (default
    CHAT_ANTHROPIC_MAX_TOKENS) and `thinking`, the API's own thinking object,
    `{"budget_tokens": 2048}` being short for `{"type": "enabled", "budget_tokens": 2048}`.
    """

    name = "anthropic"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        max_tokens: int,
        thinking: dict | None = None,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.max_tokens = max_tokens
        self.thinking = thinking
        # The read timeout bounds each wait for the next bytes, not the whole answer.
        self.timeout = anthropic.Timeout(read_timeout, connect=connect_timeout)
        self.max_retries = max_retries

    @classmethod
    def check_options(cls, options: dict) -> dict:
        unknown = sorted(set(options) - {"max_tokens", "thinking"})
        if unknown:
            raise ValueError(f"the anthropic provider takes max_tokens and thinking, not {', '.join(unknown)}")
        checked = {}
        max_tokens = options.get("max_tokens", settings.CHAT_ANTHROPIC_MAX_TOKENS)
        if "max_tokens" in options:
            if not _whole(max_tokens) or max_tokens < 1:
                raise ValueError(f"max_tokens must be a whole number of tokens, at least 1, not {max_tokens!r}")
            checked["max_tokens"] = max_tokens
        if "thinking" in options:
            checked["thinking"] = _checked_thinking(options["thinking"], max_tokens)
        return checked

    @classmethod
    def from_settings(cls, *, model: str = "", variant: int = 0, options: dict | None = None) -> "AnthropicProvider":
        options = options or {}
        return cls(
            base_url=settings.CHAT_ANTHROPIC_BASE_URL,
            api_key=settings.CHAT_ANTHROPIC_API_KEY,
            model=model,
            max_tokens=options.get("max_tokens", settings.CHAT_ANTHROPIC_MAX_TOKENS),
            thinking=options.get("thinking"),
            connect_timeout=settings.CHAT_ANTHROPIC_CONNECT_TIMEOUT_S,
            read_timeout=settings.CHAT_ANTHROPIC_READ_TIMEOUT_S,
            max_retries=settings.CHAT_ANTHROPIC_MAX_RETRIES,
        )

    def request(self, messages: list[ChatMessage], response_format: str = "text") -> dict:
        """The Messages API request: the system prompt apart, the conversation's turns in `messages`."""
        system = [m.content for m in messages if m.role == "system"]
        if response_format == "json":
            system.append(JSON_INSTRUCTION)
        params = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
        }
        if system:
            params["system"] = "\n\n".join(system)
        if self.thinking:
            params["thinking"] = self.thinking
        return params

    async def stream(
        self, messages: list[ChatMessage], *, response_format: str = "text"
    ) -> AsyncIterator[str | Delta | Finish]:
        if not self.api_key:
            raise ProviderError("CHAT_ANTHROPIC_API_KEY is not set: the Anthropic API needs a key")
        try:
            # `async with` closes the connection even when the consumer stops early.
            async with anthropic.AsyncAnthropic(
                api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
            ) as client:
                events = await client.messages.create(**self.request(messages, response_format), stream=True)
                async with events:
                    async for item in _read_events(events):
                        yield item
        except anthropic.APIStatusError as error:
            raise ProviderError(_status_message(error)) from error
        except anthropic.AnthropicError as error:
            raise ProviderError(f"upstream request failed: {type(error).__name__}: {error}") from error


async def _read_events(events: AsyncIterator) -> AsyncIterator[str | Delta | Finish]:
    """Turn the SDK's stream events into tokens and a final `Finish`; only `message_stop` ends cleanly."""
    stop_reason, usage = None, {}
    try:
        async for event in events:
            if event.type == "message_start":
                usage = _usage(event.message.usage, usage)
            elif event.type == "content_block_start":
                # A block starts empty; should one start with text, it is the block's first token.
                block = event.content_block
                if block.type == "text" and block.text:
                    yield _text(block.text)
                elif block.type == "thinking" and block.thinking:
                    yield Delta(REASONING, _text(block.thinking))
            elif event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    yield _text(delta.text)
                elif delta.type == "thinking_delta" and delta.thinking:
                    yield Delta(REASONING, _text(delta.thinking))
                # A `signature_delta` seals a thinking block, for sending the block back in a tool loop,
                # which we do not have: the history sent to the model leaves earlier reasoning out.
            elif event.type == "message_delta":
                stop_reason = event.delta.stop_reason or stop_reason
                usage = _usage(event.usage, usage)
            elif event.type == "message_stop":
                yield Finish(reason=FINISH_REASONS.get(stop_reason, stop_reason or "stop"), usage=usage)
                return
    except (ValueError, TypeError, AttributeError) as error:  # Data that is not JSON, or not the event it names.
        raise ProviderError(f"malformed event from upstream: {type(error).__name__}: {error}") from None
    raise ProviderError("upstream stream ended without message_stop")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ProviderError(f"malformed event from upstream: a text of {type(value).__name__}")
    return value


def _usage(usage: object, previous: dict) -> dict:
    """Our usage from the API's counts so far, which are cumulative and count cached prompt tokens apart."""
    counts = {key: getattr(usage, key, None) for key in (*PROMPT_COUNTS, "output_tokens")}
    if not all(count is None or _whole(count) for count in counts.values()):
        raise ProviderError(f"malformed usage from upstream: {counts}")
    prompt, completion = previous.get("prompt_tokens", 0), previous.get("completion_tokens", 0)
    if counts["input_tokens"] is not None:
        prompt = sum(counts[key] or 0 for key in PROMPT_COUNTS)
    if counts["output_tokens"] is not None:
        completion = counts["output_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _status_message(error: anthropic.APIStatusError) -> str:
    """Say what failed: an error status, or an `error` event in a stream that had started (status 200)."""
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind, message = detail.get("type"), detail.get("message")
    described = ": ".join(str(part) for part in (kind, message) if part) or str(error)
    if error.status_code < 400:
        return f"upstream error mid-stream: {described}"
    return f"upstream returned HTTP {error.status_code}: {described}"


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_thinking(thinking: object, max_tokens: int) -> dict:
    """The API's thinking object, checked, with `type` made explicit."""
    if not isinstance(thinking, dict):
        raise ValueError('thinking must be an object such as {"budget_tokens": 2048} or {"type": "adaptive"}')
    unknown = sorted(set(thinking) - {"type", "budget_tokens", "display"})
    if unknown:
        raise ValueError(f"thinking takes type, budget_tokens and display, not {', '.join(unknown)}")
    kind = thinking.get("type", "enabled" if "budget_tokens" in thinking else None)
    if kind not in THINKING_TYPES:
        raise ValueError(f"thinking.type must be one of {', '.join(THINKING_TYPES)}, not {kind!r}")
    checked = {"type": kind}
    budget = thinking.get("budget_tokens")
    if kind == "enabled":
        if not _whole(budget) or not MIN_THINKING_BUDGET <= budget < max_tokens:
            raise ValueError(
                f"thinking.budget_tokens must be a whole number from {MIN_THINKING_BUDGET} to below "
                f"max_tokens ({max_tokens}), not {budget!r}"
            )
        checked["budget_tokens"] = budget
    elif budget is not None:
        raise ValueError(f"thinking.budget_tokens goes with type enabled, not {kind}")
    if "display" in thinking:
        if kind == "disabled" or thinking["display"] not in THINKING_DISPLAYS:
            raise ValueError(f"thinking.display must be one of {', '.join(THINKING_DISPLAYS)}, with thinking on")
        checked["display"] = thinking["display"]
    return checked
