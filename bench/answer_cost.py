"""The fixed cost of an answer: the server's CPU for one short answer, start to end, on an idle server.

    .venv/bin/python -m bench.answer_cost                       # this tree, both ways of starting an answer
    .venv/bin/python -m bench.answer_cost --code 80ac7c2,worktree --flows "two requests"   # against an older tree

Each round starts a fresh project server on uvicorn (pinned to one core, the
client on the other, as bench.capacity does) and runs N answers of 3 tokens
one after the other: the POST, the stream to its end, the run and its end,
persisted. The server's CPU (user + system, all threads) divided by N is the
fixed cost of an answer; the 3 tokens cost well under 1 % of it. An answer
starts either with a POST then a GET of its stream ("two requests"), or with
one POST whose response is the stream ("one request", Accept:
text/event-stream; older trees do not have it). Rounds alternate between the
trees and flows, so a machine that speeds up or slows down affects each alike.

The pieces, to compare an answer with (`--flows`): a 404 through Django and
every middleware, an authenticated GET without a query (the bearer token's
lookup), one with a query (a conversation), and a POST whose answer runs to its
end with no stream followed ("POST only").

    .venv/bin/python -m bench.answer_cost --flows "404,authenticated GET,GET conversation,POST only,one request"

Where an answer's CPU goes (py-spy, `pip install py-spy`), one profile per measurement:

    .venv/bin/python -m bench.answer_cost --flows "one request" --rounds 1 --answers 500 --profile /tmp/cost
    .venv/bin/python -m bench.profile /tmp/cost/*.txt
"""

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import capacity, profile
from bench.capacity import Bench, Target
from bench.load import call
from bench.servers import SPECS

TOKENS = 3


async def one_request(target: Target) -> None:
    recorder = await target.post_stream(time.time(), TOKENS, watch=b"event: token")
    await recorder.closed
    body = b"".join(piece for _, piece in recorder.pieces)
    if b"event: done" not in body:
        raise RuntimeError(f"the answer did not complete: {body[:300]!r}")


async def two_requests(target: Target) -> None:
    generation, first_ms, _ = await target.answer(TOKENS)
    if first_ms is None:
        raise RuntimeError(f"answer {generation} sent no token")


# The pieces of an answer's cost, to compare it with: requests that create no answer, and a POST whose
# answer runs to its end with no stream followed.


async def expect(target: Target, method: str, path: str, status: int, *, user: bool = True, payload=None) -> None:
    conversation, headers = target.next_user() if user else (None, {})
    got, body = await call(target.port, method, path.format(conversation=conversation), headers, payload)
    if got != status:
        raise RuntimeError(f"{method} {path}: {got} {str(body)[:200]}")


async def not_found(target: Target) -> None:
    await expect(target, "GET", "/api/no-such-path", 404, user=False)


async def authenticated_get(target: Target) -> None:
    await expect(target, "GET", "/api/models", 200)


async def conversation_get(target: Target) -> None:
    await expect(target, "GET", "/api/conversations/{conversation}", 200)


async def post_only(target: Target) -> None:
    await target.create(time.time(), TOKENS)


FLOWS = {
    "two requests": two_requests,
    "one request": one_request,
    "404": not_found,
    "authenticated GET": authenticated_get,
    "GET conversation": conversation_get,
    "POST only": post_only,
}
SETTLE_S = 0.5  # After the last POST only, for the answers still running to end inside the measurement.


async def measure(bench: Bench, code: str, flow: str, answers: int, profile_to: Path | None = None) -> float:
    """ms of server CPU per answer (or request), after a warm-up of 20; py-spy samples them into `profile_to`."""
    spec = replace(SPECS["project-uvicorn"], code=code)
    server, database = await bench.start(spec, [bench.plan.server_cpu])
    try:
        target = Target(spec, server.port, database, bench.plan.rate)
        answer = FLOWS[flow]
        for _ in range(20):
            await answer(target)
        await asyncio.sleep(SETTLE_S)
        spy = profile_to and profile.record(server.pids[-1], 3600, profile_to, [bench.plan.client_cpu])
        cpu = server.cpu_seconds()
        for _ in range(answers):
            await answer(target)
        if flow == "POST only":
            await asyncio.sleep(SETTLE_S)
        if spy:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled, and exits.
            await asyncio.to_thread(spy.wait)
        return (server.cpu_seconds() - cpu) / answers * 1000
    finally:
        await bench.stop(server, database)


async def run(args) -> dict:
    plan, _ = capacity.parse_plan(["--servers", "project-uvicorn", "--phases", "ladder"])
    bench = Bench(plan, Path(tempfile.mkdtemp(prefix="bench-answer-cost-")))
    cases = [(code, flow) for code in args.code.split(",") for flow in args.flows.split(",")]
    results = {case: [] for case in cases}
    try:
        for round_ in range(args.rounds):
            for code, flow in cases:
                profile_to = args.profile and args.profile / f"{code}-{flow.replace(' ', '-')}-{round_ + 1}.txt"
                ms = await measure(bench, code, flow, args.answers, profile_to)
                results[(code, flow)].append(ms)
                print(f"round {round_ + 1}: {code:>10} {flow:<12} {ms:6.1f} ms CPU per answer", flush=True)
    finally:
        bench.databases.drop_all()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default="worktree", help="comma-separated trees: worktree or commits")
    parser.add_argument("--flows", default="two requests,one request", help=f"comma-separated, from {', '.join(FLOWS)}")
    parser.add_argument("--answers", type=int, default=200, help="answers per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of each measurement (summarise with "
                        "python -m bench.profile; sampling slows the server: not for the figures)")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    print("\nfixed cost of an answer (median of the rounds):")
    base = None
    for (code, flow), values in results.items():
        median = statistics.median(values)
        base = base or median
        print(f"  {code:>10} {flow:<12} {median:6.1f} ms  ({median / base:.2f}x the first)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [{"code": code, "flow": flow, "ms": values} for (code, flow), values in results.items()]
    (args.out / "answer_cost.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
