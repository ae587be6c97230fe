"""The models a user can pick: CHAT_MODELS, or the one model the provider settings describe.

CHAT_MODELS is a JSON list of {"provider", "model", "label", "id"}: `provider`
is a key of PROVIDERS, `model` the name the provider is given, `label` what
people see (default: the model), `id` what clients send (default: the model).
Any other key is one of the model's options, which its provider checks and
takes (anthropic: "max_tokens", "thinking"). The first is the default. Without
it, CHAT_LLM_PROVIDER and CHAT_OPENAI_MODEL define one model, so a deployment
from before CHAT_MODELS needs no change.
"""

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..errors import ApiError
from . import PROVIDERS, provider_class
from .simulated import SimulatedProvider

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
# An entry's keys that describe the model; every other key is one of its options.
ENTRY_KEYS = frozenset({"provider", "model", "label", "id"})


@dataclass(frozen=True)
class ChatModel:
    id: str
    provider: str
    model: str
    label: str
    # The provider's options for this model, checked by the provider: {} for most.
    options: dict = field(default_factory=dict)


def chat_models() -> list[ChatModel]:
    """The configured models, the default first; a bad CHAT_MODELS is an ImproperlyConfigured."""
    return _models(settings.CHAT_MODELS, settings.CHAT_LLM_PROVIDER, settings.CHAT_OPENAI_MODEL)


def default_model() -> ChatModel:
    return chat_models()[0]


def model_named(model_id: str | None, *, field: str = "model") -> ChatModel | None:
    """The model with this id; None for None; an unknown id is a 400."""
    if model_id is None:
        return None
    models = chat_models()
    for model in models:
        if model.id == model_id:
            return model
    raise ApiError(
        400,
        "unknown_model",
        f"There is no model {model_id!r}; choose one of: {', '.join(m.id for m in models)} (GET /api/models).",
        field,
    )


def known_model(model_id: str) -> ChatModel | None:
    """The model with this id if it is still configured (a conversation's last one may not be)."""
    return next((m for m in chat_models() if m.id == model_id), None)


def model_options(provider: str, model: str) -> dict:
    """The options CHAT_MODELS gives `model` of `provider`: what a generation, which records only these two, runs with.

    {} for a model no longer configured: it runs with its provider's defaults.
    """
    return next((m.options for m in chat_models() if (m.provider, m.model) == (provider, model)), {})


@lru_cache(maxsize=8)
def _models(raw: str, provider: str, openai_model: str) -> list[ChatModel]:
    if not raw.strip():
        if provider == "simulated":
            return [
                ChatModel(SimulatedProvider.DEFAULT_MODEL, "simulated", SimulatedProvider.DEFAULT_MODEL, "Simulated"),
                ChatModel(
                    SimulatedProvider.REASONING_MODEL, "simulated", SimulatedProvider.REASONING_MODEL, "Simulated, reasoning"
                ),
            ]
        if provider == "anthropic":  # CHAT_OPENAI_MODEL names no Claude model.
            raise ImproperlyConfigured('CHAT_LLM_PROVIDER "anthropic" needs CHAT_MODELS, to name the Claude models.')
        return [ChatModel(openai_model, provider, openai_model, openai_model)]
    try:
        entries = json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"CHAT_MODELS is not valid JSON: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise ImproperlyConfigured("CHAT_MODELS must be a non-empty JSON list of {provider, model, label}.")
    models = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"]:
            raise ImproperlyConfigured(f"CHAT_MODELS[{index}] needs a \"model\" (a non-empty string).")
        if entry.get("provider") not in PROVIDERS:
            raise ImproperlyConfigured(f"CHAT_MODELS[{index}].provider must be one of {sorted(PROVIDERS)}.")
        model_id = str(entry.get("id") or entry["model"])
        if not MODEL_ID.match(model_id):
            raise ImproperlyConfigured(f"CHAT_MODELS[{index}] has an id ({model_id!r}) that is not a short plain name.")
        if any(m.id == model_id for m in models):
            raise ImproperlyConfigured(f"CHAT_MODELS has two models with the id {model_id!r}; give one an \"id\".")
        try:
            options = provider_class(entry["provider"]).check_options(
                {key: value for key, value in entry.items() if key not in ENTRY_KEYS}
            )
        except ValueError as error:
            raise ImproperlyConfigured(f"CHAT_MODELS[{index}]: {error}.") from None
        twin = next((m for m in models if (m.provider, m.model) == (entry["provider"], entry["model"])), None)
        if twin is not None and twin.options != options:
            raise ImproperlyConfigured(
                f"CHAT_MODELS[{index}] gives {entry['model']!r} other options than {twin.id!r} does; "
                "a generation runs with the options of its provider and model name, so one model has one set."
            )
        label = str(entry.get("label") or entry["model"])
        models.append(ChatModel(model_id, entry["provider"], entry["model"], label, options))
    return models
