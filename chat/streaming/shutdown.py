"""Stopping this process's runs when it shuts down: flushed, then handed on or interrupted."""

import asyncio
import logging
import sys

from ..actions.queue import may_hand_on
from ..models import Generation
from . import registry

logger = logging.getLogger(__name__)


async def shutdown_runs(timeout: float = 10.0) -> None:
    """Stop every run after flushing what it has: handed on (CHAT_AUTO_CONTINUE; `may_hand_on`), else interrupted."""
    registry.shutting_down = True
    runs = registry.local_runs()
    for run in runs:
        if may_hand_on(run.runs):
            run.request_stop(Generation.Status.QUEUED)  # Handed on.
        else:
            run.request_stop(Generation.Status.INTERRUPTED, Generation.InterruptReason.SERVER_SHUTDOWN)
    if runs:
        logger.info("shutting down: stopping %d generation(s)", len(runs))
        await asyncio.wait([run.task for run in runs], timeout=timeout)


_hook_installed = False


def install_shutdown_hook() -> None:
    """Under Daphne (Twisted), stop the runs before the reactor stops.

    Daphne does not speak the ASGI lifespan protocol; servers that do (uvicorn)
    call `shutdown_runs` through the lifespan handler in project/asgi.py.
    """
    global _hook_installed
    if _hook_installed or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_runs()))
    )
    _hook_installed = True
