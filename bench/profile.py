"""Where a server's CPU goes: py-spy samples of a benchmark point, summed by component and function.

    .venv/bin/python -m bench.capacity --servers project-uvicorn --streams 200 --profile bench/results
    .venv/bin/python -m bench.profile bench/results/project-uvicorn-200.txt

py-spy (`pip install py-spy`; a tool run by hand, not a dependency) samples the
server's on-CPU Python stacks from outside the process, on the client's core.
Its raw output holds one line per distinct stack: frames joined by ";", then
the sample count. Self time is the innermost frame's; inclusive time counts a
function once per stack it appears in.
"""

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# A frame's file, as py-spy shortens it, to the part of the stack it belongs to.
COMPONENTS = [
    ("chat/", "project: chat/"),
    ("django/db/", "Django ORM and database layer"),
    ("django/core/handlers/", "Django ASGI handler"),
    ("django/http/", "Django HTTP (request, response)"),
    ("django/", "Django, other"),
    ("asgiref/", "asgiref (sync_to_async, contexts)"),
    ("ninja/", "django-ninja"),
    ("pydantic", "pydantic"),
    ("asyncio/", "asyncio event loop and streams"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "h11 (HTTP parser)"),
    ("httptools/", "httptools (HTTP parser)"),
    ("twisted/", "Twisted (Daphne)"),
    ("daphne/", "Daphne"),
    ("autobahn/", "Daphne"),
    ("channels_redis/", "channels-redis"),
    ("channels/", "Channels"),
    ("redis/", "redis client"),
    ("sqlite3/", "database driver"),
    ("psycopg", "database driver"),
    ("django_eventstream/", "django-eventstream"),
    ("json/", "json"),
    ("concurrent/", "threads and queues"),
    ("threading", "threads and queues"),
    ("queue", "threads and queues"),
    ("sse_starlette/", "sse-starlette"),
    ("starlette/", "starlette"),
    ("logging/", "logging"),
]


# Innermost frames of a thread that waits: py-spy may count them as running (a pool thread in
# its queue's C-level get, the loop in epoll). They are left out and reported apart.
WAITING = {"_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)",
           "Condition.wait (threading.py)", "Event.wait (threading.py)", "Thread._wait_for_tstate_lock (threading.py)"}


def record(pid: int, seconds: float, out: Path, cpus: list[int]) -> subprocess.Popen | None:
    """Start sampling `pid` for `seconds` into `out` (raw format), pinned to `cpus`; None without py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return None
    cores = ",".join(map(str, cpus))
    return subprocess.Popen(
        ["taskset", "-c", cores, spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--format", "raw", "--nolineno", "--rate", "100", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def component(frame: str) -> str:
    where = frame.rsplit("(", 1)[-1].rstrip(")")
    for prefix, name in COMPONENTS:
        if where.startswith(prefix):
            return name
    return where.split("/", 1)[0] if "/" in where else where


def summarize(path: Path, top: int = 15) -> str:
    stacks, waiting = [], 0
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not (frames and count.isdigit()):
            continue
        if frames.split(";")[-1] in WAITING:
            waiting += int(count)
        else:
            stacks.append((frames.split(";"), int(count)))
    total = sum(count for _, count in stacks)
    if not total:
        return f"{path}: no samples"
    by_component, by_self, by_project = Counter(), Counter(), Counter()
    for frames, count in stacks:
        by_component[component(frames[-1])] += count
        by_self[frames[-1]] += count
        for frame in set(frames):
            if component(frame).startswith("project"):
                by_project[frame] += count

    def table(counter: Counter) -> list[str]:
        return [f"  {count / total:6.1%}  {name}" for name, count in counter.most_common(top)]

    return "\n".join([
        f"{path.name}: {total} samples of running code ({waiting} more of threads waiting, left out)",
        "Self time by component (innermost frame):", *table(by_component),
        "Functions by self time:", *table(by_self),
        "Project functions by inclusive time (their callees included):", *table(by_project),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+", help="py-spy raw outputs")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print("\n\n".join(summarize(path, args.top) for path in args.files))


if __name__ == "__main__":
    main()
