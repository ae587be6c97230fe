"""The project's ASGI app with the benchmark's scheduled provider registered as "bench"."""

import chat.llm  # noqa: E402
from project.asgi import application  # noqa: F401  (sets Django up first)

chat.llm.PROVIDERS["bench"] = "bench.provider.ScheduledProvider"
