"""The chat page in Chromium inside the phone's network namespace, for the network-switch test.

    ip netns exec PHONE python -m tests.support.phone_browser URL STALL_MS

It logs in, sends a message, and once some of the answer shows writes `ready` (a JSON
line); then it waits for a line on standard input (the network has switched), and
writes `answer` once the page's client reaches a final state: the generation, the
text the client holds, and the transitions since the switch, timed on this
process's monotonic clock (one clock for every namespace of the machine).
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

from tests.browser.chat_page import CHROMIUM, CHROMIUM_ARGS, PROMPT, new_chat_page

FINAL = "() => ['ended', 'fallback'].includes(window.chatDebug.state)"


def emit(kind: str, **fields) -> None:
    print(json.dumps({"t": time.monotonic(), "kind": kind, **fields}), flush=True)


def main(url: str, stall_ms: int) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        chat = new_chat_page(browser, url, "sqlite:///unused", client_config={"stallMs": stall_ms, "backoffBaseMs": 100, "backoffCapMs": 1000})
        chat.login()
        generation_id = chat.send(PROMPT)
        chat.wait_text(150)
        emit("ready", generation_id=generation_id)
        sys.stdin.readline()
        # This process's clock against the page's: transitions are stamped with performance.now().
        page_now, now = chat.page.evaluate("performance.now()"), time.monotonic()
        seen = len(chat.transitions())
        chat.page.wait_for_function(FINAL, timeout=90_000)
        after = [
            {"state": t["state"], "t": now + (t["at"] - page_now) / 1000, "reason": t["detail"].get("reason", "")}
            for t in chat.transitions()[seen:]
        ]
        emit("answer", generation_id=generation_id, text=chat.client_text(), state=chat.state(), transitions=after, errors=chat.errors)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
