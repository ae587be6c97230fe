"""Take the chat page screenshots of the README: desktop and phone, light and dark.

    .venv/bin/python docs/screenshots_chat.py [--out docs/img]

Needs Debian's chromium. A throwaway SQLite database and a Daphne server on
127.0.0.1 with two simulated models: one conversation with a regenerated
answer (the ‹ 2/2 › switcher) that has highlighted code.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chat.llm import ChatMessage  # noqa: E402
from chat.llm.simulated import SimulatedProvider  # noqa: E402
from tests.browser.chat_page import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, logged_in_state  # noqa: E402
from tests.support.server import DatabaseTemplates, LiveServer  # noqa: E402

MODELS = [
    {"provider": "simulated", "model": "simulated-1", "label": "Simulated"},
    {"id": "simulated-long", "provider": "simulated", "model": "simulated-long", "label": "Simulated (long)"},
]


def prompt_with_code() -> str:
    """A prompt whose second version, by the first model, shows a code block."""
    provider = SimulatedProvider(tokens_per_s=0, variant=1)
    for n in range(100):
        prompt = f"How should a chat client resume a dropped stream, take {n}?"
        if "```" in "".join(provider.answer_tokens([ChatMessage("user", prompt)])):
            return prompt
    raise SystemExit("no simulated answer with code")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    out = Path(parser.parse_args().out)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = LiveServer(
            database_url=DatabaseTemplates(workdir, workdir).fresh("sqlite"),
            env={"CHAT_MODELS": json.dumps(MODELS), "CHAT_SIMULATED_TOKENS_PER_S": "400", "CHAT_SIMULATED_MAX_TOKENS": "400"},
            workdir=workdir,
        ).start()
        try:
            state = logged_in_state(server.url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_context(viewport=DESKTOP, storage_state=state).new_page()
                page.goto(server.url + "/")
                page.wait_for_selector("body[data-ready='1']")
                for prompt in ("Compare WebSockets and Server-Sent Events for tokens", prompt_with_code()):
                    page.fill("#prompt", prompt)
                    page.press("#prompt", "Enter")
                    page.wait_for_function("() => window.chatDebug.state === 'ended'")
                page.locator(".regenerate").click()
                page.wait_for_function("() => document.querySelector('.message.assistant:last-of-type .version-position')?.textContent === '2/2'")
                page.wait_for_function("() => window.chatDebug.state === 'ended'")
                url = page.url
                page.context.close()
                for scheme in ("light", "dark"):
                    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                        shot = browser.new_context(viewport=viewport, storage_state=state, color_scheme=scheme).new_page()
                        shot.goto(url, wait_until="domcontentloaded")
                        shot.wait_for_selector("body[data-ready='1']")
                        shot.wait_for_selector(".message.assistant .code-block")
                        shot.locator(".message.assistant").last.hover()
                        shot.screenshot(path=str(out / f"{name}-chat-{scheme}.png"))
                        shot.context.close()
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
