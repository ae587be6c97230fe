"""CHAT_MODELS' per-model options: checked by each model's provider when the settings load, then given to it."""

import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat.llm.catalog import chat_models, model_options


def configure(settings, *entries: dict) -> None:
    settings.CHAT_MODELS = json.dumps(list(entries))


def claude(**options) -> dict:
    return {"provider": "anthropic", "model": "claude-x", **options}


@pytest.mark.parametrize(
    ("options", "checked"),
    [
        ({}, {}),
        ({"max_tokens": 16000}, {"max_tokens": 16000}),
        ({"thinking": {"budget_tokens": 2048}}, {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
        (
            {"max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": 16000, "display": "summarized"}},
            {"max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": 16000, "display": "summarized"}},
        ),
        ({"thinking": {"type": "adaptive"}}, {"thinking": {"type": "adaptive"}}),
        ({"thinking": {"type": "disabled"}}, {"thinking": {"type": "disabled"}}),
    ],
)
def test_anthropic_options_are_checked_and_given_to_the_model(settings, options, checked):
    configure(settings, claude(**options, label="Claude"))

    [model] = chat_models()

    assert (model.id, model.label, model.options) == ("claude-x", "Claude", checked)
    assert model_options("anthropic", "claude-x") == checked


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.2}, "takes max_tokens and thinking, not temperature"),
        ({"max_tokens": 0}, "max_tokens must be a whole number"),
        ({"max_tokens": "4096"}, "max_tokens must be a whole number"),
        ({"max_tokens": True}, "max_tokens must be a whole number"),
        ({"thinking": True}, "thinking must be an object"),
        ({"thinking": {"budget_tokens": 512}}, r"a whole number from 1024 to below max_tokens \(8192\), not 512"),
        ({"thinking": {"budget_tokens": 8192}}, r"below max_tokens \(8192\)"),
        ({"max_tokens": 2048, "thinking": {"budget_tokens": 4096}}, r"below max_tokens \(2048\)"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens must be a whole number"),
        ({"thinking": {}}, "thinking.type must be one of enabled, adaptive, disabled, not None"),
        ({"thinking": {"type": "on"}}, "thinking.type must be one of"),
        ({"thinking": {"type": "adaptive", "budget_tokens": 2048}}, "budget_tokens goes with type enabled"),
        ({"thinking": {"budget_token": 2048}}, "thinking takes type, budget_tokens and display, not budget_token"),
        ({"thinking": {"type": "adaptive", "display": "full"}}, "thinking.display must be one of summarized, omitted"),
    ],
)
def test_bad_anthropic_options_stop_the_start_saying_what_is_wrong(settings, options, message):
    configure(settings, {"provider": "simulated", "model": "simulated-1"}, claude(**options))

    with pytest.raises(ImproperlyConfigured, match=r"CHAT_MODELS\[1\]: .*" + message):
        chat_models()


@pytest.mark.parametrize("provider", ["simulated", "openai"])
def test_providers_without_options_refuse_them(settings, provider):
    configure(settings, {"provider": provider, "model": "m", "max_tokens": 100})

    message = rf"CHAT_MODELS\[0\]: the {provider} provider takes no options, not max_tokens"
    with pytest.raises(ImproperlyConfigured, match=message):
        chat_models()


def test_one_model_listed_twice_must_have_the_same_options(settings):
    configure(settings, claude(id="claude"), claude(id="claude-thinking", thinking={"budget_tokens": 2048}))

    with pytest.raises(ImproperlyConfigured, match=r"CHAT_MODELS\[1\] gives 'claude-x' other options than 'claude'"):
        chat_models()


def test_one_model_listed_twice_with_the_same_options_is_fine(settings):
    configure(settings, claude(id="claude", max_tokens=4096), claude(id="claude-again", label="Again", max_tokens=4096))

    assert [m.id for m in chat_models()] == ["claude", "claude-again"]


def test_a_model_no_longer_listed_has_no_options(settings):
    configure(settings, claude(max_tokens=4096))

    assert model_options("anthropic", "claude-gone") == {}
    assert model_options("openai", "claude-x") == {}


def test_anthropic_as_the_one_provider_needs_its_models_named(settings):
    settings.CHAT_MODELS, settings.CHAT_LLM_PROVIDER = "", "anthropic"

    with pytest.raises(ImproperlyConfigured, match="needs CHAT_MODELS"):
        chat_models()
