"""A run's stop and cancel, on the real database, with the simulated provider stalled after two tokens.

A stop (cancel, stall, shutdown) interrupts the run while it waits for
upstream, and the run takes that interruption back to record its end; a
cancel of the run's task itself (the event loop closing) must still cancel it.
"""

import asyncio

import pytest

from chat.llm import ChatMessage
from chat.models import Generation
from chat.streaming import registry, runner
from tests.support import factories
from tests.support.wait import eventually

# The writer and the run's database work happen in threads: rows must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def generation(settings):
    settings.CHAT_SIMULATED_STALL_AFTER = 2  # Then upstream is silent, for longer than any test.
    settings.CHAT_SIMULATED_FIRST_TOKEN_DELAY_S = 0
    settings.CHAT_SIMULATED_TOKENS_PER_S = 1000
    settings.CHAT_UPSTREAM_STALL_S = 3600
    made = factories.generation(status="streaming", tokens=[])
    Generation.objects.filter(pk=made.pk).update(worker=registry.WORKER_ID)
    return Generation.objects.select_related("conversation").get(pk=made.pk)


async def silent_run(generation) -> runner.GenerationRun:
    """A run of `generation` that has sent two tokens and waits for a third that never comes."""
    run = runner.start_generation(generation, [ChatMessage(role="user", content="Why stream?")], prefix="")
    await eventually(lambda: run.seq, until=lambda seq: seq == 2, what="the run's first two tokens")
    return run


async def test_a_stop_while_upstream_is_silent_ends_the_run_as_asked(generation):
    run = await silent_run(generation)
    run.request_stop(Generation.Status.CANCELLED)
    await run.task  # Returns: the run took back the cancel its stop sent.
    assert (run.end.status, run.end.last_seq) == ("cancelled", 2)
    stored = await Generation.objects.aget(pk=generation.pk)
    assert (stored.status, stored.last_seq) == ("cancelled", 2)
    assert registry.local_run(generation.pk) is None


@pytest.mark.parametrize("stopped_first", [False, True], ids=["cancelled", "stopped-then-cancelled"])
async def test_a_cancel_of_the_run_itself_is_not_taken_back(generation, stopped_first):
    run = await silent_run(generation)
    if stopped_first:
        run.request_stop(Generation.Status.CANCELLED)
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    assert run.end is None
    assert (await Generation.objects.aget(pk=generation.pk)).status == "streaming"  # For the reaper to settle.
