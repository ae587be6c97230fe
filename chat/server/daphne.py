"""Daphne's start and end of the process: background tasks at once, and exit as soon as its reactor has stopped.

Daphne sends no ASGI lifespan events: the reaper (which continues the answers
a previous process handed on) starts when the reactor runs, not at the first
request, so a restart continues them with no client connected.

Under Daphne, a before-shutdown trigger (`chat.streaming.shutdown.install_shutdown_hook`)
stops the running answers and records them. After that nothing is left to do,
but the interpreter's own finalisation then garbage-collects the coroutines of
the connections Daphne killed, and on CPython 3.11 that crashed the process
(SIGSEGV, "Garbage-collecting" in asyncio) in about one exit in eight under
load. So the process ends right after the reactor stops, its logs flushed.
uvicorn, which speaks the ASGI lifespan protocol, needs none of this.
"""

import logging
import os
import sys


def exit_after_reactor_stops() -> None:
    """Called once at start-up (ChatConfig.ready); does nothing outside Daphne."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("after", "shutdown", exit_now)


def start_background_tasks() -> None:
    """Called once at start-up (ChatConfig.ready); does nothing outside Daphne."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    from ..streaming.reaper import ensure_running

    # A delayed call runs on the reactor's asyncio loop once it runs.
    reactor.callLater(0, ensure_running)


def exit_now() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
