"""ASGI lifespan (uvicorn, hypercorn): at start-up, the reaper (it continues the answers a stopped
process handed on); at shutdown, stop the running generations cleanly.

Daphne does not send lifespan events; chat.daphne and chat.runner hook into its reactor instead.
"""

from .reaper import ensure_running
from .runner import shutdown_runs


async def lifespan_app(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            ensure_running()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_runs()
            await send({"type": "lifespan.shutdown.complete"})
            return
