"""The simulated provider: deterministic, paced, and faulty on request."""

import asyncio
import json

import pytest

from chat.llm import ChatMessage, Finish, ProviderError
from chat.llm.simulated import SimulatedProvider

MESSAGES = [ChatMessage("user", "How do I cache database queries in Django?")]


async def collect(provider, response_format="text"):
    items = [item async for item in provider.stream(MESSAGES, response_format=response_format)]
    return items[:-1], items[-1]


async def test_same_prompt_same_answer_and_about_the_prompt():
    tokens, finish = await collect(SimulatedProvider(tokens_per_s=0))
    again, _ = await collect(SimulatedProvider(tokens_per_s=0))
    assert tokens == again and len(tokens) > 20
    text = "".join(tokens)
    assert "cache database queries" in text and "lorem" not in text.lower()
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert finish.usage["completion_tokens"] == len(tokens)


async def test_seed_changes_the_answer():
    first, _ = await collect(SimulatedProvider(tokens_per_s=0, seed=1))
    second, _ = await collect(SimulatedProvider(tokens_per_s=0, seed=2))
    assert first != second


async def test_json_answer_is_valid_json():
    tokens, _ = await collect(SimulatedProvider(tokens_per_s=0), "json")
    document = json.loads("".join(tokens))
    assert document["items"] and len(tokens) > 10


async def test_max_tokens_truncates_with_length():
    tokens, finish = await collect(SimulatedProvider(tokens_per_s=0, max_tokens=5))
    assert len(tokens) == 5 and finish.reason == "length"


async def test_pacing_follows_tokens_per_second():
    provider = SimulatedProvider(tokens_per_s=100, max_tokens=20)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await collect(provider)
    assert loop.time() - start >= 19 / 100


@pytest.mark.parametrize("knob", ["fail_after", "malformed_after"])
async def test_fault_knobs_raise_after_n_tokens(knob):
    provider = SimulatedProvider(tokens_per_s=0, **{knob: 4})
    seen = []
    with pytest.raises(ProviderError):
        async for item in provider.stream(MESSAGES):
            seen.append(item)
    assert len(seen) == 4


async def test_stall_knob_hangs():
    provider = SimulatedProvider(tokens_per_s=0, stall_after=2)
    stream = provider.stream(MESSAGES)
    assert [await anext(stream), await anext(stream)]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await anext(stream)
    await stream.aclose()


async def test_asked_to_continue_it_sends_the_rest_of_its_answer():
    from chat.llm import CONTINUE_INSTRUCTION

    provider = SimulatedProvider(tokens_per_s=0)
    full = provider.answer_tokens(MESSAGES)
    partial = "".join(full[:9])
    rest = provider.answer_tokens(
        [*MESSAGES, ChatMessage("assistant", partial), ChatMessage("user", CONTINUE_INSTRUCTION)]
    )
    assert partial + "".join(rest) == "".join(full) and rest == full[9:]
