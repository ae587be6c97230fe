"""How soon the chat page streams again after an outage that drops every packet.

A real server (Daphne, the simulated model at 20 tokens/s) and, between it and
Chromium, the fault proxy in black-hole mode: nothing is closed or refused,
nothing forwarded, and every connection open during the outage stays silent
for good, as after a switch of network. The page runs with the product's
timings. For each outage length and run: send a question, wait for 40
characters of answer, black-hole the network for N s, restore it, and measure
the time from the restore to the first new text on the page. Every answer
must end with exactly the stored text.

    .venv/bin/python -m bench.dead_connection                      # 2, 5, 20, 60 s; 5 runs each
    .venv/bin/python -m bench.dead_connection --outages 2,5 --runs 3

docs/client.md has the figures.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.browser.chat_page import CHROMIUM, CHROMIUM_ARGS, chat_pages, logged_in_state
from tests.support.proxy import FaultProxy
from tests.support.server import DatabaseTemplates, LiveServer

RATE = 20  # tokens/s
# Records when the answer's shown text grows (page clock), every 10 ms.
WATCH_TEXT = """
window.textGrowth = [];
let shown = 0;
setInterval(() => {
  const el = document.querySelector('.message.assistant:last-of-type .content');
  const length = el ? el.textContent.length : 0;
  if (length > shown) { window.textGrowth.push(performance.now()); shown = length; }
}, 10);
"""


def answer_env(outage_s: float) -> dict:
    """An answer that runs about 15 s past the outage (about 20 tokens a point)."""
    seconds = outage_s + 15
    points = int(seconds * RATE / 20) + 1
    return {
        "CHAT_SIMULATED_TOKENS_PER_S": RATE,
        "CHAT_SIMULATED_POINTS": points,
        "CHAT_SIMULATED_MAX_TOKENS": points * 40,
        "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0.05,
    }


def one_run(make, proxy: FaultProxy, server: LiveServer, outage_s: float, n: int) -> dict:
    chat = make(init_script=WATCH_TEXT)
    try:
        generation_id = chat.send(f"Run {n}: how does a phone get a streamed answer back after an outage of {outage_s} s?")
        chat.wait_text(40)
        proxy.black_hole()
        time.sleep(outage_s)  # the outage: the scenario being measured
        proxy.restore()
        restored_at = chat.page.evaluate("performance.now()")
        chat.wait_state("ended", "fallback", timeout=(outage_s + 120) * 1000)
        growth = chat.page.evaluate("window.textGrowth")
        first = next(at for at in growth if at > restored_at)
        stored = chat.page.request.get(f"{server.url}/api/generations/{generation_id}").json()
        exact = stored["status"] == "complete" and chat.client_text() == stored["text"]
        reconnects = sum(t["state"] in ("interrupted", "error") for t in chat.transitions())
        return {"latency_s": (first - restored_at) / 1000, "exact": exact, "reconnects": reconnects}
    finally:
        chat.page.context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outages", default="2,5,20,60", help="outage lengths in seconds, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    outages = [float(value) for value in args.outages.split(",")]

    from playwright.sync_api import sync_playwright

    templates = DatabaseTemplates(Path(tempfile.mkdtemp(prefix="bench-dead-connection-")))
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for outage_s in outages:
            env = {key: str(value) for key, value in answer_env(outage_s).items()}
            server = LiveServer(database_url=templates.fresh("sqlite"), env=env, workdir=templates.workdir).start()
            try:
                with FaultProxy(server.port) as proxy:
                    state = logged_in_state(server.url)
                    with chat_pages(browser, proxy.url, server.database_url, storage_state=state) as make:
                        runs = [one_run(make, proxy, server, outage_s, n) for n in range(args.runs)]
            finally:
                server.stop()
            latencies = [run["latency_s"] for run in runs]
            row = {
                "outage_s": outage_s,
                "runs": len(runs),
                "p50_s": statistics.median(latencies),
                "max_s": max(latencies),
                "exact": sum(run["exact"] for run in runs),
                "reconnects": statistics.median(run["reconnects"] for run in runs),
            }
            rows.append(row)
            print(
                f"outage {outage_s:g} s: first new text {row['p50_s']:.2f} s after the network is back (p50), "
                f"{row['max_s']:.2f} s at most; {row['exact']}/{row['runs']} exact; "
                f"{row['reconnects']:g} reconnect states (median)",
                flush=True,
            )
        browser.close()
    templates.drop_all()
    print("\n| Outage | Runs | First new text after the network is back, p50 | Max | Exact text |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['outage_s']:g} s | {row['runs']} | {row['p50_s']:.2f} s | {row['max_s']:.2f} s | {row['exact']}/{row['runs']} |")


if __name__ == "__main__":
    main()
