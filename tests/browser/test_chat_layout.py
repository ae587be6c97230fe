"""Layout at phone and desktop widths, and the screenshots in docs/img/.

The screenshots are taken only when CHAT_SCREENSHOT_DIR names a folder
(`CHAT_SCREENSHOT_DIR=docs/img make test PYTEST_ARGS=tests/browser/test_chat_layout.py`),
because they stream a dozen answers; the layout checks always run.
"""

import os
from pathlib import Path

import pytest

from tests.browser.chat_page import ANSWER_STREAMS, DESKTOP, PHONE, PROMPT, chat_pages

pytestmark = pytest.mark.timeout(180)

SCREENSHOT_DIR = os.environ.get("CHAT_SCREENSHOT_DIR", "")
NO_HORIZONTAL_OVERFLOW = "document.documentElement.scrollWidth <= window.innerWidth"


def test_phone_width_layout(make_page):
    chat = make_page(viewport=PHONE)
    assert chat.page.locator("#sidebar").bounding_box()["x"] < 0  # a drawer, off screen
    chat.send("A long question " + "with many words " * 12 + "and `code_that_does_not_wrap_easily_at_all()`")
    chat.wait_text(120)
    assert chat.page.evaluate(NO_HORIZONTAL_OVERFLOW)
    composer = chat.page.locator("#composer").bounding_box()
    assert composer["x"] >= 0 and composer["x"] + composer["width"] <= PHONE["width"]
    assert composer["y"] + composer["height"] <= PHONE["height"]
    assert chat.page.locator("#stop").is_visible()
    chat.page.click("#toggle-sidebar")
    chat.page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    assert chat.page.locator(".conversation.active").is_visible()
    chat.page.click("#scrim", position={"x": PHONE["width"] - 20, "y": 400})
    chat.page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
    chat.wait_state("ended")
    assert chat.page.evaluate(NO_HORIZONTAL_OVERFLOW)


def test_phone_placeholder_fits_and_the_closed_drawer_leaves_no_shadow(make_page):
    chat = make_page(viewport=PHONE)
    # The placeholder is one line in the field as first shown (a second line would be clipped).
    fit = chat.page.evaluate(
        """() => {
            const field = document.getElementById('prompt');
            const style = getComputedStyle(field);
            const context = document.createElement('canvas').getContext('2d');
            context.font = style.font;
            const room = field.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            return { text: context.measureText(field.placeholder).width, room };
        }"""
    )
    assert 0 < fit["text"] <= fit["room"], fit
    # The closed drawer is hidden outright: nothing of it (its shadow included) shows on the page's edge.
    sidebar = "getComputedStyle(document.getElementById('sidebar'))"
    assert chat.page.evaluate(f"{sidebar}.visibility") == "hidden"
    assert chat.page.evaluate(f"{sidebar}.boxShadow") == "none"
    chat.page.click("#toggle-sidebar")
    chat.page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    assert chat.page.evaluate(f"{sidebar}.visibility") == "visible"
    chat.page.keyboard.press("Escape")  # closes the drawer (and stops nothing)
    chat.page.wait_for_function(f"() => {sidebar}.visibility === 'hidden'")
    # The desktop field keeps the full hint.
    desktop = make_page(viewport=DESKTOP)
    assert desktop.page.get_attribute("#prompt", "placeholder") == "Message (Enter to send, Shift+Enter for a new line)"


@pytest.mark.skipif(not SCREENSHOT_DIR, reason="set CHAT_SCREENSHOT_DIR to write the docs/img screenshots")
@pytest.mark.parametrize("name, viewport", [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshots_of_each_state(make_page, proxy, name, viewport):
    folder = Path(SCREENSHOT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    chat = make_page(viewport=viewport, client_config={"stallMs": 1500, "silenceMs": 1500, "backoffBaseMs": 400, "backoffCapMs": 1500, "fallbackPollMs": 300})

    def shot(state: str) -> None:
        chat.page.wait_for_timeout(150)  # let the render window and the caret settle
        chat.page.screenshot(path=str(folder / f"{name}-{state}.png"))

    chat.send("Explain how a chat client resumes a dropped stream")
    chat.wait_text(260 if name == "desktop" else 180)
    shot("streaming")
    chat.wait_state("ended")
    shot("complete")

    chat.send("What does exponential backoff with full jitter mean?")
    chat.wait_text(120)
    proxy.stall(ANSWER_STREAMS, new_requests=True)  # silent: dead; and the new one gets no answer yet
    chat.page.wait_for_function(
        "() => document.getElementById('status-state').textContent === 'Reconnecting…'"
        " && window.chatDebug.transitions.filter((t) => t.state === 'interrupted').length >= 2"
    )
    shot("reconnecting")
    proxy.reset()
    chat.wait_state("ended", timeout=30_000)

    chat.send("How does a phone keep an answer through a tunnel?")
    chat.wait_text(120)
    chat.page.context.set_offline(True)
    proxy.cut()
    chat.page.wait_for_function("() => window.chatDebug.transitions.at(-1).detail.offline === true")
    shot("interrupted")
    chat.page.context.set_offline(False)
    chat.wait_state("ended", timeout=30_000)

    chat.send("What does a fallback read instead of the stream?")
    chat.wait_text(120)
    proxy.refuse(path="/stream")  # three strikes: the stored answer instead
    proxy.cut()
    chat.wait_state("fallback", timeout=30_000)
    proxy.reset()
    shot("fallback")

    chat.send(PROMPT)
    chat.wait_text(120)
    proxy.refuse(path="/api/generations/")
    proxy.cut()
    chat.wait_state("error", timeout=30_000)
    shot("error")
    proxy.allow()
    chat.wait_state("ended", "fallback", timeout=30_000)  # it leaves Error by itself


@pytest.mark.skipif(not SCREENSHOT_DIR, reason="set CHAT_SCREENSHOT_DIR to write the docs/img screenshots")
@pytest.mark.parametrize("name, viewport", [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshot_of_continue(chromium, echo_server, echo_state, name, viewport):
    """An answer the model's connection cut: Interrupted by the server, with Continue."""
    with chat_pages(chromium, echo_server.url, echo_server.database_url, storage_state=echo_state, viewport=viewport) as make:
        chat = make()
        chat.send("[upstream:cut] Explain how a chat client resumes a dropped stream after a cut")
        chat.wait_state("ended")
        chat.page.locator(".continue").wait_for()
        chat.page.wait_for_timeout(150)
        chat.page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}-continue.png"))
