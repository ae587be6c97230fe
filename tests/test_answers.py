"""Reading a stored answer (chat/streaming/answers.py) while its run is still writing it: the real database, no server."""

import pytest

from chat.db import db_work
from chat.models import Generation, TokenChunk
from chat.streaming import answers
from tests.support import factories

# answers hands its reads to database threads: rows must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = ['{"a"', ": 1", ', "b"', ": 2", "}"]


def finish(generation: Generation, tokens: list[str]) -> None:
    """What the run's final transaction commits: its last tokens and its end, together."""
    TokenChunk.objects.create(
        generation=generation, first_seq=generation.last_seq + 1, last_seq=len(TOKENS), tokens=tokens
    )
    Generation.objects.filter(pk=generation.pk).update(status="complete", last_seq=len(TOKENS), finish_reason="stop")


async def test_text_through_the_last_token_when_the_end_commits_between_its_reads(monkeypatch):
    """A client cut off just after the last token resumes while the run's final transaction commits.

    text_through read the tokens, found the last one missing, then found the
    end: it must read the tokens again, or the client's last token (and the
    `json` event it completed) is lost for good.
    """
    generation = await db_work(factories.generation)(status="streaming", tokens=TOKENS[:-1], chunk_size=2)
    real_load_end = answers.load_end

    async def load_end_after_the_final_commit(generation_id):
        await db_work(finish)(generation, TOKENS[-1:])
        return await real_load_end(generation_id)

    monkeypatch.setattr(answers, "load_end", load_end_after_the_final_commit)
    before, last = await answers.text_through(generation.pk, len(TOKENS))
    assert (before, last) == ("".join(TOKENS[:-1]), TOKENS[-1])


async def test_text_through_a_token_never_stored_gives_the_text_without_it():
    """Pruned (or never stored) tokens: no `last`, so the caller sends a snapshot instead."""
    generation = await db_work(factories.generation)(status="interrupted", tokens=TOKENS, chunk_size=2)
    await db_work(TokenChunk.objects.filter(generation=generation, first_seq=5).delete)()
    assert await answers.text_through(generation.pk, 5) == ("".join(TOKENS[:4]), None)
    assert await answers.text_through(generation.pk, 4) == ("".join(TOKENS[:3]), TOKENS[3])
