"""The end of a generation, announced: the one place that publishes it, whoever ended it."""

from ..events import End
from ..hub import Hub, get_hub, stream_group
from ..live import generation_changed


async def generation_ended(generation_id, end: End, *, hub: Hub | None = None, owner_told: bool = False) -> None:
    """Tell the generation's followers (the hub) and its owner's devices (the live channel).

    Call it only after the end is committed, so that nobody hears of an end
    that the database does not have: the runner, the reaper, an operator and
    `manage.py reap_generations` all end generations in a transaction first.
    `owner_told`: the live channel's event went out at the commit (the runner's own end).
    """
    await (hub or get_hub()).publish(stream_group(generation_id), end)
    if not owner_told:
        await generation_changed(generation_id)


async def generations_ended(generations) -> None:
    """`generation_ended` for each of the generations (model instances) just ended."""
    for generation in generations:
        await generation_ended(generation.id, End.of(generation))
