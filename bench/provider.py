"""A simulated provider on a wall-clock schedule the benchmark client knows.

The prompt carries `[t0=<unix time>]`. Token i (from 0) is due at
t0 + i / CHAT_SIMULATED_TOKENS_PER_S, on the machine's wall clock, so the client,
on the same machine, knows when each token was produced upstream without the
server adding anything to the stream. A server too busy to read its upstream
on time shows up as latency, as it would with a real LLM whose tokens wait in
the socket. The text is the simulated answer to the prompt without the marker,
so every stream of a run carries the same tokens.
"""

import asyncio
import re
import time

from chat.llm.base import ChatMessage, Finish
from chat.llm.simulated import SimulatedProvider, split_tokens

MARKER = re.compile(r"\s*\[t0=([0-9.]+)\]")


class ScheduledProvider(SimulatedProvider):
    name = "bench"

    async def stream(self, messages: list[ChatMessage], *, response_format: str = "text"):
        prompt = messages[-1].content
        found = MARKER.search(prompt)
        t0 = float(found.group(1)) if found else time.time()
        plain = [*messages[:-1], ChatMessage(role=messages[-1].role, content=MARKER.sub("", prompt))]
        tokens = self.answer_tokens(plain, response_format)[: self.max_tokens]
        interval = 1.0 / self.tokens_per_s
        for index, token in enumerate(tokens):
            delay = t0 + index * interval - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield token
        prompt_tokens = sum(len(split_tokens(m.content)) for m in plain)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens)}
        yield Finish(reason="stop", usage={**usage, "total_tokens": prompt_tokens + len(tokens)})
