"""Take the screenshots of docs/admin.md: real servers make real data, headless Chromium shoots the admin.

    .venv/bin/python docs/screenshots_admin.py [--out docs/img]

Needs Debian's chromium (`apt-get install chromium`). Everything runs on
127.0.0.1 with a throwaway SQLite database: several Daphne processes on the
same database produce answers that complete, stall, fail, are cancelled, are
cut and resumed by their client, are paused mid-stream (SIGSTOP) and are
orphaned by a SIGKILL, which the next server reaps.
"""

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.client import ChatClient  # noqa: E402
from tests.support.operator import OPERATOR, admin_action, operator_client  # noqa: E402
from tests.support.server import USERS, DatabaseTemplates, LiveServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
BASE_ENV = {"CHAT_HEARTBEAT_STALE_S": "3", "CHAT_REAPER_INTERVAL_S": "0.5", "CHAT_SIMULATED_POINTS": "5"}

PROMPTS = [
    "How do I resume an SSE stream after a network switch?",
    "Explain backpressure between an LLM and a slow phone",
    "What should a chat server persist while streaming?",
    "Write a retry policy for flaky mobile connections",
    "How do event ids make a stream resumable?",
    "Compare WebSockets and Server-Sent Events for token streaming",
]


async def user(server, name: str) -> ChatClient:
    return await ChatClient(server.url).login(name, USERS[name])


async def make_data(workdir: Path) -> tuple[LiveServer, str]:
    """Fill a fresh database with generations in every state; return a live server and the detail subject."""
    url = DatabaseTemplates(workdir).fresh("sqlite")

    def server(**env) -> LiveServer:
        return LiveServer(database_url=url, env={**BASE_ENV, **env}, workdir=workdir).start()

    normal = server(CHAT_SIMULATED_TOKENS_PER_S="60")
    async with await user(normal, "alice") as alice, await user(normal, "bob") as bob:
        for client, prompt in ((alice, PROMPTS[0]), (bob, PROMPTS[1]), (alice, PROMPTS[2])):
            await client.read_stream((await client.ask(prompt))["id"])
        for cut_every in (7, 19):
            await bob.follow_with_cuts((await bob.ask(f"{PROMPTS[3]} (take {cut_every})"))["id"], cut_every)
        cancelled = await alice.ask(PROMPTS[4])
        await alice.read_stream(cancelled["id"], max_events=12)
        await alice.post(f"/api/generations/{cancelled['id']}/cancel")
    normal.stop()

    for env, prompt in (
        ({"CHAT_SIMULATED_STALL_AFTER": "23", "CHAT_UPSTREAM_STALL_S": "1.5"}, PROMPTS[5]),
        ({"CHAT_SIMULATED_FAIL_AFTER": "31"}, PROMPTS[1]),
        ({"CHAT_SIMULATED_FAIL_AFTER": "0"}, PROMPTS[2]),
    ):
        faulty = server(CHAT_SIMULATED_TOKENS_PER_S="60", **env)
        async with await user(faulty, "bob") as bob:
            generation = await bob.ask(prompt)
            await bob.read_stream(generation["id"], max_events=5)
            await bob.read_stream(generation["id"], last_event_id="5")
        faulty.stop()

    # The detail page's subject: paused mid-stream (a stall on the timeline), cut and resumed by
    # its client, then the server dies (SIGKILL) and the next one reaps it as worker_lost.
    doomed = server(CHAT_SIMULATED_TOKENS_PER_S="15", CHAT_HEARTBEAT_STALE_S="30")
    async with await user(doomed, "alice") as alice:
        subject = await alice.ask(PROMPTS[0] + " Be thorough.")
        first = await alice.read_stream(subject["id"], max_events=8)
        doomed.process.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        doomed.process.send_signal(signal.SIGCONT)
        follow = asyncio.ensure_future(alice.read_stream(subject["id"], last_event_id=first.last_id))
        await asyncio.sleep(2.0)
        doomed.stop(signal.SIGKILL)
        try:
            await follow
        except Exception:
            pass  # the server died under the stream

    # A server that was stopped cleanly mid-answer (SIGTERM): server_shutdown.
    stopping = server(CHAT_SIMULATED_TOKENS_PER_S="20")
    async with await user(stopping, "bob") as bob:
        generation = await bob.ask(PROMPTS[3])
        await bob.read_stream(generation["id"], max_events=6)
    stopping.stop(signal.SIGTERM)

    live = server(CHAT_SIMULATED_TOKENS_PER_S="60")
    async with await user(live, "alice") as alice:
        # Served by the new process: its reaper ends the orphan, and the client comes back to it.
        read = await alice.read_stream(subject["id"], last_event_id=first.last_id)
        assert read.terminal and read.terminal.event == "interrupted", read.events[-1:]
        async with await operator_client(live) as ops:
            await admin_action(ops, "continue_generations", generation["id"])
        still_running = await alice.ask(PROMPTS[2] + " In detail.")
        await alice.read_stream(still_running["id"], max_events=3)
    return live, subject["id"]


def shoot(live: LiveServer, subject: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 900}, color_scheme="light")
        page.goto(f"{live.url}/admin/login/")
        page.fill("#id_username", OPERATOR[0])
        page.fill("#id_password", OPERATOR[1])
        page.click("input[type=submit]")
        page.wait_for_url(f"{live.url}/admin/")
        # Fold the navigation sidebar, for room: the admin keeps the choice in localStorage.
        page.evaluate("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        page.goto(f"{live.url}/admin/chat/generation/")
        page.screenshot(path=out / "admin-generation-list.png", full_page=True)
        page.goto(f"{live.url}/admin/chat/generation/{subject}/change/")
        page.screenshot(path=out / "admin-generation-detail.png", full_page=True)
        page.goto(f"{live.url}/admin/chat/generation/overview/")
        page.screenshot(path=out / "admin-overview.png", full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        live, subject = asyncio.run(make_data(Path(tmp)))
        try:
            shoot(live, subject, args.out)
        finally:
            live.stop()
    print(f"Wrote {', '.join(sorted(p.name for p in args.out.glob('admin-*.png')))} to {args.out}")


if __name__ == "__main__":
    main()
