"""The simulated provider: an offline, deterministic stand-in for a real LLM.

It is the default so that `make run` and the tests work on a machine with no
network. It writes a short, plausible answer about the prompt (seeded by the
prompt, the model's name and the answer's variant, so the same prompt gives
the same first answer and a regenerated one differs), paced like a real model,
and can be told to misbehave like one: stall, fail or send a malformed chunk.

Its model `simulated-reasoning` thinks first, as reasoning models do: a short
reasoning part, then the answer.
"""

import asyncio
import hashlib
import itertools
import json
import random
import re
from collections.abc import AsyncIterator, Iterator

from django.conf import settings

from .base import (
    CONTINUE_INSTRUCTION,
    REASONING,
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
)

STOPWORDS = set(
    "a an and are as at be but by can could do does for from how i in is it its me my of on or "
    "please should so tell that the their this to was what when where which who why will with "
    "would you your about explain write give make show".split()
)

OPENINGS = [
    "Good question about {topic}.",
    "Here is a practical way to think about {topic}.",
    "Let's break {topic} down step by step.",
    "{Topic} comes up often, so here is a clear answer.",
]
POINTS = [
    "Start with the smallest version of {topic} that works, then measure before you optimise.",
    "Keep the state of {topic} in one place, so every part of the system agrees on it.",
    "Write down the failure cases of {topic} first: timeouts, retries and partial results.",
    "Prefer boring, well-tested tools for {topic}; novelty is a cost you pay later.",
    "Make {topic} observable: log what happened, to whom, and how far it got.",
    "Test {topic} against the real thing over a real connection, not only a mock.",
    "Design {topic} so that a retry is always safe, because networks drop requests.",
    "Give {topic} clear limits, and return a clear error when one is reached.",
]
CLOSINGS = [
    "If you tell me more about your constraints, I can make this more specific.",
    "That should be enough to get started; ask again if a step is unclear.",
    "In short: keep it simple, measure it, and make failures visible.",
]
THOUGHTS = [
    "The question is about {topic}.",
    "Does the user need the idea behind {topic}, or steps to follow? Steps seem more useful.",
    "The failure cases matter most: that is where {topic} usually goes wrong.",
    "A short sketch could help, if it stays minimal.",
    "I should order the points from the simplest to the most involved.",
    "Keep it brief; they can ask for more.",
]
CODE_SAMPLE = "```python\nasync def handle({name}):\n    result = await fetch({name})\n    return result\n```"


def prompt_topic(prompt: str) -> str:
    """Pick the few content words of the prompt that name its subject."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9_-]*", prompt) if w.lower() not in STOPWORDS]
    return " ".join(words[:3]).lower() or "this"


def pick_points(rng: random.Random, count: int) -> list[str]:
    """Distinct points while they last, then repeats: long answers for benchmarks."""
    return rng.sample(POINTS, min(count, len(POINTS))) + [rng.choice(POINTS) for _ in range(count - len(POINTS))]


def compose_text_answer(prompt: str, rng: random.Random, points: int = 3) -> str:
    topic = prompt_topic(prompt)
    lines = [rng.choice(OPENINGS).format(topic=topic, Topic=topic[:1].upper() + topic[1:]), ""]
    for number, point in enumerate(pick_points(rng, points), start=1):
        lines.append(f"{number}. {point.format(topic=topic)}")
    if rng.random() < 0.5:
        lines += ["", "A minimal sketch:", "", CODE_SAMPLE.format(name=topic.split()[0].replace("-", "_"))]
    lines += ["", rng.choice(CLOSINGS)]
    return "\n".join(lines)


def compose_reasoning(prompt: str, rng: random.Random) -> str:
    topic = prompt_topic(prompt)
    return " ".join(thought.format(topic=topic) for thought in [THOUGHTS[0], *rng.sample(THOUGHTS[1:], 2)])


def compose_json_answer(prompt: str, rng: random.Random, points: int = 3) -> str:
    topic = prompt_topic(prompt)
    items = [
        {"name": f"Step {number}", "detail": point.format(topic=topic)}
        for number, point in enumerate(pick_points(rng, points), start=1)
    ]
    return json.dumps({"title": topic.title(), "items": items})


TOKEN = re.compile(r"\s*[A-Za-z0-9_']+|\s*[^\sA-Za-z0-9_']|\s+")


def split_tokens(text: str) -> list[str]:
    """Split like a subword tokenizer would: words carry their leading space."""
    return TOKEN.findall(text)


def iter_tokens(text: str) -> Iterator[str]:
    """`split_tokens`, one at a time: a waiting answer holds its text, not a list of its tokens.

    Matched from a position rather than with `finditer`, whose scanner holds 1.5 KiB for as long as the answer lasts.
    """
    position = 0
    while match := TOKEN.match(text, position):  # Every character matches: None only at the end.
        position = match.end()
        yield match.group()


class SimulatedProvider(Provider):
    name = "simulated"
    DEFAULT_MODEL = "simulated-1"
    REASONING_MODEL = "simulated-reasoning"

    def __init__(
        self,
        *,
        tokens_per_s: float,
        model: str = DEFAULT_MODEL,
        variant: int = 0,
        first_token_delay_s: float = 0.0,
        max_tokens: int = 160,
        points: int = 3,
        seed: int = 0,
        stall_after: int | None = None,
        fail_after: int | None = None,
        malformed_after: int | None = None,
    ):
        self.tokens_per_s = tokens_per_s
        self.model = model or self.DEFAULT_MODEL
        self.variant = variant
        self.first_token_delay_s = first_token_delay_s
        self.max_tokens = max_tokens
        self.points = points
        self.seed = seed
        self.stall_after = stall_after
        self.fail_after = fail_after
        self.malformed_after = malformed_after

    @classmethod
    def from_settings(cls, *, model: str = "", variant: int = 0, options: dict | None = None) -> "SimulatedProvider":
        return cls(
            model=model,
            variant=variant,
            tokens_per_s=settings.CHAT_SIMULATED_TOKENS_PER_S,
            first_token_delay_s=settings.CHAT_SIMULATED_FIRST_TOKEN_DELAY_S,
            max_tokens=settings.CHAT_SIMULATED_MAX_TOKENS,
            points=settings.CHAT_SIMULATED_POINTS,
            seed=settings.CHAT_SIMULATED_SEED,
            stall_after=settings.CHAT_SIMULATED_STALL_AFTER,
            fail_after=settings.CHAT_SIMULATED_FAIL_AFTER,
            malformed_after=settings.CHAT_SIMULATED_MALFORMED_AFTER,
        )

    def answer_tokens(self, messages: list[ChatMessage], response_format: str = "text") -> list[str | Delta]:
        """Return the whole answer as tokens (its reasoning's as `Delta`s); the same input always gives the same answer.

        Asked to continue a partial answer of its own, it sends the rest of it.
        """
        return list(self.iter_answer(messages, response_format))

    def iter_answer(self, messages: list[ChatMessage], response_format: str = "text") -> Iterator[str | Delta]:
        """`answer_tokens`, one at a time."""
        if len(messages) >= 3 and messages[-1].content == CONTINUE_INSTRUCTION and messages[-2].role == "assistant":
            full = self.answer_tokens(messages[:-2], response_format)
            partial, sent = messages[-2].content, ""
            for index, token in enumerate(full):
                if sent == partial:
                    return iter(full[index:])
                if type(token) is str:
                    sent += token
        prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        # The default model's first answer keeps the seed it always had.
        key = f"{self.seed}:{response_format}:{prompt}"
        if self.model != self.DEFAULT_MODEL:
            key += f":{self.model}"
        if self.variant:
            key += f":{self.variant}"
        digest = hashlib.sha256(key.encode()).digest()
        rng = random.Random(digest)
        compose = compose_json_answer if response_format == "json" else compose_text_answer
        answer = iter_tokens(compose(prompt, rng, self.points))
        if self.model != self.REASONING_MODEL:
            return answer
        reasoning = (Delta(REASONING, token) for token in iter_tokens(compose_reasoning(prompt, rng)))
        return itertools.chain(reasoning, answer)

    async def stream(
        self, messages: list[ChatMessage], *, response_format: str = "text"
    ) -> AsyncIterator[str | Delta | Finish]:
        tokens = self.iter_answer(messages, response_format)
        loop = asyncio.get_running_loop()
        # Pace against an absolute schedule so sleep overhead does not add up.
        start = loop.time() + self.first_token_delay_s
        interval = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        sent = answered = 0  # Tokens sent, and those of them that are answer text: the limit counts only these.
        truncated = False
        for token in tokens:
            if answered >= self.max_tokens:
                truncated = True
                break
            await self.misbehave(sent)
            delay = start + sent * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield token
            sent += 1
            answered += type(token) is str
        await self.misbehave(sent)
        prompt_tokens = sum(len(split_tokens(m.content)) for m in messages)
        yield Finish(
            reason="length" if truncated else "stop",
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sent,
                "total_tokens": prompt_tokens + sent,
            },
        )

    async def misbehave(self, sent: int) -> None:
        """Misbehave once `sent` tokens have gone out, as the fault knobs say."""
        if self.fail_after is not None and sent >= self.fail_after:
            raise ProviderError(f"simulated upstream error after {sent} tokens (HTTP 500)")
        if self.malformed_after is not None and sent >= self.malformed_after:
            raise ProviderError(f"malformed chunk from upstream after {sent} tokens")
        if self.stall_after is not None and sent >= self.stall_after:
            # Hang like a stuck upstream; the runner's stall timeout ends it.
            await asyncio.Event().wait()
