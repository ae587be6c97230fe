"""A simulated provider on a wall-clock schedule the benchmark client knows.

The prompt carries `[t0=<unix time>]` and optionally `[tokens=<n>]`. Token i
(from 0) is due at t0 + i / CHAT_SIMULATED_TOKENS_PER_S on the machine's wall
clock (bench/schedule.py), so the client, on the same machine, knows when each
token was produced upstream without the server adding anything to the stream.
A server too busy to read its upstream on time shows up as latency, as it
would with a real LLM whose tokens wait in the socket. The text is the
simulated answer to the prompt without the markers, cut to `n` tokens (else
to CHAT_SIMULATED_MAX_TOKENS), so every stream of a run carries the same tokens.

The model `simulated-reasoning` (`bench.capacity --model simulated-reasoning`)
spends the first half of those tokens reasoning (its reasoning repeated as
needed), then answers: every stream switches part once, and half its tokens
are `reasoning` events, as a model that thinks at length sends them.
"""

import itertools
import re
import time

from bench.schedule import due, sleep_until
from chat.llm.base import ChatMessage, Finish
from chat.llm.simulated import SimulatedProvider, split_tokens

MARKER = re.compile(r"\s*\[t0=([0-9.]+)\]")
TOKENS = re.compile(r"\s*\[tokens=([0-9]+)\]")


class ScheduledProvider(SimulatedProvider):
    name = "bench"

    async def stream(self, messages: list[ChatMessage], *, response_format: str = "text"):
        prompt = messages[-1].content
        found = MARKER.search(prompt)
        t0 = float(found.group(1)) if found else time.time()
        limit = int(found.group(1)) if (found := TOKENS.search(prompt)) else self.max_tokens
        plain = [*messages[:-1], ChatMessage(role=messages[-1].role, content=TOKENS.sub("", MARKER.sub("", prompt)))]
        # An older tree (`--code <commit>`) has only `answer_tokens`, the same tokens as a list.
        answer = getattr(self, "iter_answer", self.answer_tokens)
        # Composed when the first token is due: until then the answer is the upstream's memory, not the server's.
        await sleep_until(due(t0, 1, self.tokens_per_s))
        count = min(limit, self.max_tokens)
        tokens = answer(plain, response_format)
        tokens = reasoning_first(tokens, count) if self.model == self.REASONING_MODEL else itertools.islice(tokens, count)
        sent = 0
        for sent, token in enumerate(tokens, start=1):
            await sleep_until(due(t0, sent, self.tokens_per_s))
            yield token
        prompt_tokens = sum(len(split_tokens(m.content)) for m in plain)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent}
        yield Finish(reason="stop", usage={**usage, "total_tokens": prompt_tokens + sent})


def reasoning_first(tokens, count: int):
    """`count` tokens: the answer's reasoning, cycled, for the first half; then its text."""
    tokens = list(tokens)
    thoughts = [token for token in tokens if type(token) is not str]
    text = (token for token in tokens if type(token) is str)
    half = count // 2
    return itertools.chain(itertools.islice(itertools.cycle(thoughts), half), itertools.islice(text, count - half))
