from django.conf import settings
from django.utils.module_loading import import_string

from .base import CONTINUE_INSTRUCTION, REASONING, TEXT, ChatMessage, Delta, Finish, Provider, ProviderError

PROVIDERS = {
    "simulated": "chat.llm.simulated.SimulatedProvider",
    "openai": "chat.llm.openai.OpenAIProvider",
}


def get_provider(name: str | None = None, *, model: str = "", variant: int = 0) -> Provider:
    """Build the provider (the configured one by default) for `model`; settings are read on every call.

    `variant` numbers an answer among the answers to one message: the simulated model varies by it.
    """
    name = name or settings.CHAT_LLM_PROVIDER
    try:
        provider_class = import_string(PROVIDERS[name])
    except KeyError:
        raise ValueError(f"Unknown CHAT_LLM_PROVIDER {name!r}; choose one of {sorted(PROVIDERS)}") from None
    return provider_class.from_settings(model=model, variant=variant)


__all__ = ["CONTINUE_INSTRUCTION", "REASONING", "TEXT", "ChatMessage", "Delta", "Finish", "Provider", "ProviderError", "get_provider"]
