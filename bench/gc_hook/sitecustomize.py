"""Log every garbage collection of a benchmark server (`bench.capacity --gc-log`).

On the server's PYTHONPATH only with --gc-log: Python imports `sitecustomize`
at start-up. Each collection stops every thread for its whole duration; a line
per collection goes to $BENCH_GC_LOG.<pid>: `<unix time at its end> <generation>
<milliseconds>`. The young generations' collections are short but frequent; the
oldest's are rare and long.
"""

import gc
import os
import time

if os.environ.get("BENCH_GC_LOG"):
    _log = open(f"{os.environ['BENCH_GC_LOG']}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 (the process's life)
    _started = [0.0]

    def _time_collections(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            _log.write(f"{time.time():.3f} {info['generation']} {(time.perf_counter() - _started[0]) * 1000:.3f}\n")

    gc.callbacks.append(_time_collections)
