from django.conf import settings
from django.utils.module_loading import import_string

from .base import (
    CONTINUE_INSTRUCTION,
    REASONING,
    TEXT,
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
)

PROVIDERS = {
    "simulated": "chat.llm.simulated.SimulatedProvider",
    "openai": "chat.llm.openai.OpenAIProvider",
    "anthropic": "chat.llm.anthropic.AnthropicProvider",
}


def provider_class(name: str) -> type[Provider]:
    """The provider class PROVIDERS names; an unknown name is a ValueError."""
    try:
        return import_string(PROVIDERS[name])
    except KeyError:
        raise ValueError(f"Unknown CHAT_LLM_PROVIDER {name!r}; choose one of {sorted(PROVIDERS)}") from None


def get_provider(name: str | None = None, *, model: str = "", variant: int = 0) -> Provider:
    """Build the provider (the configured one by default) for `model`; settings are read on every call.

    `variant` numbers an answer among the answers to one message: the simulated model varies by it.
    The model's options (a thinking budget, say) are those its CHAT_MODELS entry gives.
    """
    from .catalog import model_options  # The catalog reads PROVIDERS from this module.

    name = name or settings.CHAT_LLM_PROVIDER
    return provider_class(name).from_settings(model=model, variant=variant, options=model_options(name, model))


__all__ = [
    "CONTINUE_INSTRUCTION",
    "REASONING",
    "TEXT",
    "ChatMessage",
    "Delta",
    "Finish",
    "Provider",
    "ProviderError",
    "get_provider",
    "provider_class",
]
