"""The token writer (chat/streaming/writer.py) on its own: fake runs, the real database, no server."""

import asyncio
from dataclasses import dataclass, field

import pytest

from chat.models import Generation, TokenChunk
from chat.streaming import writer as writer_module
from chat.streaming.writer import TokenWriter
from tests.support import factories
from tests.support.wait import eventually

# The writer hands its work to database threads: rows must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(eq=False)
class FakeRun:
    """What the writer needs of a run: its pending tokens as a chunk, taken back on failure."""

    generation_id: object
    durable_first: bool = False
    seq: int = 0
    first_seq: int = 1
    persisted_seq: int = 0
    pending: list[str] = field(default_factory=list)
    written: list[TokenChunk] = field(default_factory=list)
    writer: TokenWriter | None = None

    def produce(self, *tokens: str) -> None:
        """New tokens from upstream, told to the writer as the runner does."""
        self.pending += tokens
        self.seq += len(tokens)
        self.writer.tokens_added(self)

    def take_pending(self) -> list[TokenChunk]:
        if not self.pending:
            return []
        tokens, self.pending = self.pending, []
        return [TokenChunk(
            generation_id=self.generation_id, first_seq=self.seq - len(tokens) + 1, last_seq=self.seq, tokens=tokens
        )]

    def restore_pending(self, chunks: list[TokenChunk]) -> None:
        self.pending = [token for chunk in chunks for token in chunk.tokens] + self.pending

    def persisted(self, chunk: TokenChunk) -> None:
        self.written.append(chunk)


def attach(writer: TokenWriter, *runs: FakeRun) -> None:
    for run in runs:
        writer.runs.add(run)
        run.writer = writer


@pytest.fixture
def runs():
    return [FakeRun(factories.generation(status="streaming", tokens=[]).pk) for _ in range(3)]


async def stored(run) -> list[tuple[int, int, list[str]]]:
    chunks = TokenChunk.objects.filter(generation_id=run.generation_id).order_by("first_seq")
    return [row async for row in chunks.values_list("first_seq", "last_seq", "tokens")]


async def test_one_flush_writes_one_chunk_per_run_that_has_tokens(runs):
    writer = TokenWriter()
    attach(writer, *runs)
    runs[0].produce("a", "b")
    runs[2].produce("c")
    await writer.flush()
    assert await stored(runs[0]) == [(1, 2, ["a", "b"])]
    assert await stored(runs[1]) == []
    assert await stored(runs[2]) == [(1, 1, ["c"])]
    assert [c.last_seq for c in runs[0].written] == [2] and runs[1].written == []
    assert runs[0].pending == runs[2].pending == [], "handed over"


async def test_successive_flushes_cover_the_seqs_contiguously(runs):
    writer = TokenWriter()
    run = runs[0]
    attach(writer, run)
    for tokens in (["Re", "sume"], [" by"], [], [" id", "."]):
        run.produce(*tokens)
        await writer.flush()
    assert await stored(run) == [(1, 2, ["Re", "sume"]), (3, 3, [" by"]), (4, 5, [" id", "."])]


async def test_a_failed_write_keeps_the_tokens_for_the_next_flush(runs, monkeypatch):
    writer = TokenWriter()
    run = runs[0]
    attach(writer, run)
    real_write = writer_module.write_chunks

    def fail_once(chunks, **options):
        monkeypatch.setattr(writer_module, "write_chunks", real_write)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(writer_module, "write_chunks", fail_once)
    run.produce("a", "b")
    await writer.flush()
    assert await stored(run) == [] and run.written == []
    await writer.flush()  # No new token since: the kept ones are written all the same.
    assert await stored(run) == [(1, 2, ["a", "b"])]
    run.produce("c")
    await writer.flush()
    assert await stored(run) == [(1, 2, ["a", "b"]), (3, 3, ["c"])], "nothing lost, nothing written twice"


async def test_a_full_batch_is_written_before_the_interval(runs, settings):
    settings.CHAT_FLUSH_INTERVAL_S = 3600
    settings.CHAT_FLUSH_MAX_TOKENS = 3
    writer = TokenWriter()
    run = runs[0]
    writer.add(run)
    run.writer = writer
    try:
        run.produce("a", "b", "c")
        assert await eventually(lambda: stored(run)) == [(1, 3, ["a", "b", "c"])]
    finally:
        writer.remove(run)
        writer.wake.set()
        await writer.task


async def test_finish_writes_the_last_tokens_after_the_earlier_ones(runs):
    writer = TokenWriter()
    run = runs[0]
    attach(writer, run)
    run.produce("a")
    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0)  # One turn of the loop: the flush takes "a" and starts writing it.
    run.produce("b")

    def write_end(chunks):
        writer_module.insert_chunks(chunks)
        return "ended"

    assert await writer.finish(run, write_end) == "ended"
    await flushing
    assert await stored(run) == [(1, 1, ["a"]), (2, 2, ["b"])]


async def test_a_fenced_run_writes_only_while_this_process_owns_its_generation(runs, monkeypatch):
    """Worker mode: a worker taken for dead must not write into the stream of the worker that took over."""
    monkeypatch.setattr("chat.streaming.writer.WORKER_ID", "this-worker")
    owned, lost = runs[0], runs[1]
    await Generation.objects.filter(pk=owned.generation_id).aupdate(worker="this-worker")
    await Generation.objects.filter(pk=lost.generation_id).aupdate(worker="another-worker")
    writer = TokenWriter()
    for run in (owned, lost):
        run.durable_first = True
        attach(writer, run)
        run.produce("x")
    await writer.flush()
    assert await stored(owned) == [(1, 1, ["x"])] and len(owned.written) == 1
    assert await stored(lost) == [] and lost.written == []
