"""This process's runs: which generations it runs now, and its name on their rows.

The runner registers each run here; followers, cancels, the heartbeat, the
reaper and shutdown look runs up here, so none of them imports the runner.
"""

import os
import socket
import uuid

# This process's name in a generation's `worker` column: "host:pid:tag".
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

_runs: dict = {}  # generation id -> its GenerationRun
# Set once shutdown starts: a stream torn down from then on ends `server_shutdown`, not `client_gone`.
shutting_down = False


def register(run, context) -> None:
    """Keep `run` until its task, started in `context`, ends."""
    generation_id = run.generation_id  # Not the run: the callback would keep it, and all it holds.
    _runs[generation_id] = run
    run.task.add_done_callback(lambda task: _runs.pop(generation_id, None), context=context)


def local_run(generation_id):
    """The run of this generation in this process, or None."""
    return _runs.get(generation_id)


def local_runs() -> list:
    return list(_runs.values())


def local_generation_ids() -> list:
    """The generations this process runs: alive, whatever their heartbeat says."""
    return list(_runs)
