"""axe-core on the chat page, in the light and the dark theme: no violation, rendered Markdown included.

axe-core is pinned by tests/browser/axe/package-lock.json (make test installs
it) and injected into the page with `add_script_tag`. The answer on the page
is an answer streamed from the server, then the page's own renderer draws a
Markdown sample into it (task lists, highlighted code, an aligned table), so
that every kind of element the renderer makes is checked in the page's styles.
"""

import os
from pathlib import Path

import pytest

from tests.browser.chat_page import PROMPT
from tests.conftest import require_service

pytestmark = pytest.mark.timeout(90)

AXE = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"

RICH = """## Resuming a stream

1. Keep the **last event id**.
2. Reconnect with `Last-Event-ID`.

- [x] store the id
- [ ] handle `snapshot` events

| Field | Type | Size |
| :--- | :---: | ---: |
| seq | int | 8 |
| text | str | 120 |

```python
# Resume after the last id the client has.
async def resume(client, last_id: int) -> str:
    if last_id < 0:
        raise ValueError("no id")
    return await client.stream(last_id=last_id, retry=True)
```

> A [link](https://example.com) in a quote, and `inline code`.
"""

DRAW_SAMPLE = """async (text) => {
    const { renderMarkdown } = await import('/static/chat/markdown.js');
    const content = document.querySelector('.message.assistant:last-of-type .content');
    content.replaceChildren(renderMarkdown(text));
}"""


@pytest.fixture
def axe_chat(chat):
    require_service(AXE.exists(), f"{AXE} is missing: run make axe-deps (needs npm)")
    chat.send(PROMPT)
    chat.wait_state("ended")
    chat.page.evaluate(DRAW_SAMPLE, RICH)
    # Served from the page's own origin, so the page's CSP (script-src 'self') lets it run, unchanged.
    chat.page.route("**/axe-test/axe.min.js", lambda route: route.fulfill(path=os.fspath(AXE), content_type="text/javascript"))
    chat.page.add_script_tag(url=chat.base_url + "/axe-test/axe.min.js")
    return chat


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_axe_violation_in_either_theme(axe_chat, scheme):
    chat = axe_chat
    chat.page.emulate_media(color_scheme=scheme)
    assert chat.page.locator(".content input[type=checkbox]").count() == 2
    assert chat.page.locator(".content .hljs-keyword").count() > 0 and chat.page.locator(".content .hljs-comment").count() == 1
    violations = chat.page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ['violations'] })).violations.map((v) => ({
            id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ') + ': ' + n.failureSummary),
        }))"""
    )
    assert violations == [], f"{scheme}: {violations}"


def test_table_columns_keep_their_alignment(axe_chat):
    aligns = axe_chat.page.evaluate(
        "() => [...document.querySelectorAll('.content tr:nth-child(1) td')].map((td) => getComputedStyle(td).textAlign)"
    )
    assert [align.removeprefix("-webkit-") for align in aligns] == ["left", "center", "right"]


def test_the_page_has_a_favicon_and_loads_nothing_missing(chat):
    failed = []
    chat.page.on("response", lambda response: response.status >= 400 and failed.append((response.status, response.url)))
    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready='1']")
    icon = chat.page.locator("link[rel=icon]").get_attribute("href")
    response = chat.page.request.get(chat.base_url + icon)
    assert response.ok and response.headers["content-type"].startswith("image/svg+xml")
    assert failed == []


def test_the_theme_is_chosen_remembered_and_system_follows_the_system(chat):
    background = "() => getComputedStyle(document.documentElement).backgroundColor"
    code_theme = (
        "() => [...document.querySelectorAll('link[data-code-theme]')].map((l) => [l.dataset.codeTheme, matchMedia(l.media).matches])"
    )
    chat.page.emulate_media(color_scheme="light")
    light = chat.page.evaluate(background)
    chat.page.select_option("#theme", "dark")
    dark = chat.page.evaluate(background)
    assert dark != light and chat.page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert chat.page.evaluate(code_theme) == [["light", False], ["dark", True]]
    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready='1']")
    assert chat.page.input_value("#theme") == "dark" and chat.page.evaluate(background) == dark, "remembered"
    chat.page.select_option("#theme", "system")
    assert chat.page.evaluate(background) == light
    chat.page.emulate_media(color_scheme="dark")
    chat.page.wait_for_function("(dark) => getComputedStyle(document.documentElement).backgroundColor === dark", arg=dark)
    assert chat.page.evaluate(code_theme) == [["light", False], ["dark", True]], "system: follows it live"
