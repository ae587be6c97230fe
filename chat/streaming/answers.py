"""Reading a stored answer: its tokens, its parts, its end. The one place that rebuilds text from chunks.

The functions here are plain sync ORM code, one unit of work each; async code
calls them through `db_work` (or the async helpers below), one hop per unit.
"""

import asyncio
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Max

from ..db import db_work
from ..llm.base import REASONING, TEXT
from ..models import Generation, Message, TokenChunk
from .events import End, Token

END_FIELDS = ("status", "last_seq", "finish_reason", "interrupt_reason", "error", "usage")

# A generation deleted under a follower (its conversation was deleted): nothing more will come.
DELETED_END = End(status=Generation.Status.CANCELLED, last_seq=0, reason="deleted")


@dataclass(frozen=True)
class AnswerParts:
    """An answer's text and its reasoning, kept apart."""

    text: str = ""
    reasoning: str = ""

    @classmethod
    def of_message(cls, message) -> "AnswerParts":
        return cls(message.content, message.reasoning)

    def plus(self, tokens: list[Token]) -> "AnswerParts":
        """This answer with `tokens` (events in order) appended, each to its part."""
        text, reasoning = [self.text], [self.reasoning]
        for token in tokens:
            (reasoning if token.part == REASONING else text).append(token.text)
        return AnswerParts("".join(text), "".join(reasoning))

    @property
    def parts(self) -> list[str]:
        """The kinds of part the answer has, in the order a reader shows them."""
        return [part for part, text in ((REASONING, self.reasoning), (TEXT, self.text)) if text]

    def endswith(self, tail: "AnswerParts") -> bool:
        return self.text.endswith(tail.text) and self.reasoning.endswith(tail.reasoning)

    def without(self, tail: "AnswerParts") -> "AnswerParts":
        """This answer minus `tail`, which it ends with."""
        return AnswerParts(self.text[: len(self.text) - len(tail.text)], self.reasoning[: len(self.reasoning) - len(tail.reasoning)])


def last_persisted_seq(generation_id) -> int | None:
    """The sequence number of the generation's last persisted token; None if it has none."""
    return TokenChunk.objects.filter(generation_id=generation_id).aggregate(last=Max("last_seq"))["last"]


def stored_end(generation_id) -> End | None:
    """The generation's terminal event if it has ended, else None."""
    generation = Generation.objects.filter(pk=generation_id).only(*END_FIELDS).first()
    if generation is None:
        return DELETED_END
    return End.of(generation) if generation.is_terminal else None


async def load_end(generation_id) -> End | None:
    return await db_work(stored_end)(generation_id)


def persisted_tokens(generation_id, after_seq: int, through: int | None = None) -> list[Token]:
    """The persisted tokens after `after_seq` (and up to `through`), one event per stored chunk.

    Stops at the first missing token: the ones after it are not committed yet.
    """
    chunks = TokenChunk.objects.filter(generation_id=generation_id, last_seq__gt=after_seq)
    if through is not None:
        chunks = chunks.filter(first_seq__lte=through)
    replay = []
    rows = chunks.order_by("first_seq").values_list("first_seq", "last_seq", "tokens", "part")
    for first_seq, last_seq, tokens, part in rows:
        if first_seq > after_seq + 1:
            break
        if through is not None and last_seq > through:
            tokens, last_seq = tokens[: through - first_seq + 1], through
        skip = after_seq + 1 - first_seq
        replay.append(Token(first_seq + skip, last_seq, "".join(tokens[skip:]), tokens[skip:], part))
        after_seq = last_seq
    return replay


def replay_state(generation_id, after_seq: int) -> tuple[int | None, End | None, list[Token]]:
    """What a follower at `after_seq` needs first, in one unit: (first_seq, the end if ended, the tokens).

    An ended generation replays only up to its recorded end. first_seq is None
    if the generation is gone.
    """
    generation = Generation.objects.filter(pk=generation_id).only("first_seq", *END_FIELDS).first()
    if generation is None:
        return None, DELETED_END, []
    end = End.of(generation) if generation.is_terminal else None
    return generation.first_seq, end, persisted_tokens(generation_id, after_seq, end.last_seq if end else None)


def answer_through(generation_id) -> tuple[AnswerParts, int] | None:
    """The answer up to the generation's last token, and that token's sequence number.

    The assistant message holds the whole answer: the parts of the generations
    a continuation continues, then its own, written when it ends. So a running
    generation's answer there stops at its first_seq - 1, and an ended one's is
    the message minus what the continuations that ended after it appended.
    """
    row = (
        Generation.objects.filter(pk=generation_id)
        .values(
            "status", "first_seq", "last_seq", "assistant_message_id",
            "assistant_message__content", "assistant_message__reasoning",
        )
        .first()
    )
    if row is None:
        return None
    answer = AnswerParts(row["assistant_message__content"], row["assistant_message__reasoning"])
    if row["status"] not in Generation.TERMINAL_STATUSES:
        return answer, row["first_seq"] - 1
    later = (
        Generation.objects.filter(
            assistant_message_id=row["assistant_message_id"],
            first_seq__gt=row["last_seq"],
            status__in=Generation.TERMINAL_STATUSES,
        )
        .exclude(pk=generation_id)
        .order_by("-first_seq")
        .values_list("pk", "first_seq", "last_seq")
    )
    for pk, first_seq, last_seq in later:
        tokens = persisted_tokens(pk, first_seq - 1)
        tail = AnswerParts().plus(tokens)
        complete = last_seq < first_seq or (tokens and tokens[-1].last_seq == last_seq)
        if not complete or not answer.endswith(tail):
            # Its tokens are pruned too: the answer runs on, and following that
            # continuation ends with a snapshot that replaces it.
            break
        answer = answer.without(tail)
    return answer, row["last_seq"]


async def text_through(generation_id, seq: int) -> tuple[str, str | None]:
    """The answer's text through token `seq`, as (the text before it, its own text, or None if not a text token).

    Waits for tokens still on their way to the database.
    """
    row = await db_work(Generation.objects.filter(pk=generation_id).values("first_seq", "continued_from_id").first)()
    if row is None:
        return "", None
    first_seq, text = row["first_seq"], ""
    if first_seq > 1 and row["continued_from_id"]:
        # A continuation: the text before it is the answer of the generation it continues.
        found = await db_work(answer_through)(row["continued_from_id"])
        text = found[0].text if found else ""
    if seq < first_seq:
        return text, None
    read_tokens = db_work(persisted_tokens)
    while True:
        tokens = await read_tokens(generation_id, first_seq - 1)
        if (tokens[-1].last_seq if tokens else first_seq - 1) >= seq:
            break
        if await load_end(generation_id):
            # The run's final transaction may have committed its last tokens since the read above.
            tokens = await read_tokens(generation_id, first_seq - 1)
            break
        await asyncio.sleep(settings.CHAT_FLUSH_INTERVAL_S)
    pieces = [(token.part, piece) for token in tokens for piece in token.pieces][: seq - first_seq + 1]
    if len(pieces) < seq - first_seq + 1:  # Pruned or never stored: a snapshot will follow.
        return text + "".join(piece for part, piece in pieces if part == TEXT), None
    (part, last), before = pieces[-1], text + "".join(piece for part, piece in pieces[:-1] if part == TEXT)
    return before, (last if part == TEXT else None)


def persisted_answer(generation: Generation) -> tuple[AnswerParts, int]:
    """The answer as the database has it, and the last sequence number it covers.

    For a running generation that is the answer so far: the persisted chunks
    after what its assistant message already held.
    """
    answer = AnswerParts(*Message.objects.filter(pk=generation.assistant_message_id).values_list("content", "reasoning").get())
    if generation.is_terminal:
        return answer, generation.last_seq
    tokens = persisted_tokens(generation.pk, generation.first_seq - 1)
    last_seq = tokens[-1].last_seq if tokens else generation.first_seq - 1
    return answer.plus(tokens), last_seq
