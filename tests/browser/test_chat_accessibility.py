"""Accessibility of the chat page: what the live region announces, and the contrast of the state badges."""

import re

import pytest

from tests.browser.chat_page import PROMPT, assert_shows_stored

pytestmark = pytest.mark.timeout(60)

# Every text the polite live region is given, in order.
RECORD_ANNOUNCEMENTS = """
window.__announced = [];
const region = document.getElementById('announcer');
new MutationObserver(() => window.__announced.push(region.textContent.trim()))
    .observe(region, { childList: true, characterData: true, subtree: true });
"""


def test_live_region_announces_state_changes_and_the_end_not_counters(chat, proxy):
    region = chat.page.locator("#announcer")
    assert region.get_attribute("role") == "status" and region.get_attribute("aria-live") == "polite"
    status = chat.page.locator("#status")  # the counters live here: not a live region any more
    assert status.get_attribute("aria-live") is None and status.get_attribute("role") is None
    chat.page.evaluate(RECORD_ANNOUNCEMENTS)
    generation_id = chat.send(PROMPT)
    chat.wait_text(40)
    assert proxy.cut() >= 1
    chat.wait_state("ended")
    assert_shows_stored(chat, generation_id)
    announced = [text for text in chat.page.evaluate("window.__announced") if text]
    renders = chat.page.evaluate("window.chatDebug.renders")
    assert renders > 10 and len(announced) <= 6, announced  # not one announcement per render
    assert not any(re.search(r"\d", text) for text in announced), announced  # no token counts or rates
    assert announced[0] == "Connection lost. Reconnecting."
    assert "Reconnected; the answer continues." in announced
    assert announced[-1] == "Answer complete."


def luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(channel, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(float(v)) for v in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


BADGES = [
    ("idle", ""),
    ("connecting", ""),
    ("streaming", ""),
    ("interrupted", ""),
    ("fallback", "complete"),
    ("error", ""),
    ("ended", "complete"),
    ("ended", "cancelled"),
    ("ended", "interrupted"),
    ("ended", "failed"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_state_badges_have_a_contrast_of_at_least_4_5(chat, scheme):
    chat.page.emulate_media(color_scheme=scheme)
    colours = chat.page.evaluate(
        """(badges) => badges.map(([state, outcome]) => {
            const status = document.getElementById('status');
            status.dataset.state = state;
            if (outcome) status.dataset.outcome = outcome; else delete status.dataset.outcome;
            const style = getComputedStyle(document.getElementById('status-state'));
            return [state, outcome, style.color, style.backgroundColor];
        })""",
        BADGES,
    )
    ratios = {f"{state}/{outcome}": round(contrast(rgb(fg), rgb(bg)), 2) for state, outcome, fg, bg in colours}
    low = {badge: ratio for badge, ratio in ratios.items() if ratio < 4.5}
    assert not low, f"{scheme}: {low}"
