"""The one interface every LLM provider implements."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


# Sent as a user message after a partial answer to ask the model to go on.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating any of it and without any preamble."
)


# The kinds of part a generation's stream carries. Every part's tokens share the one sequence space.
TEXT = "text"
REASONING = "reasoning"


@dataclass(frozen=True, slots=True)
class Delta:
    """A token of a part other than the answer's text (a plain `str` is answer text): its reasoning, say."""

    part: str
    text: str


@dataclass(frozen=True)
class Finish:
    """The last item a provider yields: why the answer ended, and its usage."""

    reason: str = "stop"
    usage: dict = field(default_factory=dict)


class ProviderError(Exception):
    """Upstream failed: an error status or body, a cut, or a malformed chunk."""


class Provider:
    """Yields the answer as tokens, then exactly one `Finish`.

    A token of the answer's text is a `str`; a token of another part (the
    model's reasoning) is a `Delta`. Parts may alternate.

    Raise `ProviderError` for upstream faults. Stalls are not the provider's
    business: the runner times out a provider that goes quiet.
    """

    name: str = ""
    model: str = ""

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """Return a model's options (its CHAT_MODELS entry's other keys) checked; a ValueError says what is wrong."""
        if options:
            raise ValueError(f"the {cls.name} provider takes no options, not {', '.join(sorted(options))}")
        return {}

    @classmethod
    def from_settings(cls, *, model: str = "", variant: int = 0, options: dict | None = None) -> "Provider":
        """The provider as configured, for `model` (empty: the configured one) with its checked `options`."""
        raise NotImplementedError

    def stream(
        self, messages: list[ChatMessage], *, response_format: str = "text"
    ) -> AsyncIterator[str | Delta | Finish]:
        raise NotImplementedError
