"""The Content-Security-Policy in Chromium: the chat page, the admin and /api/docs work under it, with no violation.

Every page listens for `securitypolicyviolation` from its first script on, and
console errors that mention the policy count too.
"""

import pytest

from tests.browser.chat_page import FAST_CLIENT, ChatPage
from tests.support.operator import OPERATOR
from tests.support.server import TEST_ENV, USERS, manage

LISTEN = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture
def context(chromium):
    context = chromium.new_context()
    context.add_init_script(LISTEN)
    context.add_init_script(f"window.CHAT_CLIENT_CONFIG = {FAST_CLIENT!r};")
    yield context
    context.close()


def watched(context):
    """A new page, and the list its CSP console errors and uncaught errors go to."""
    page = context.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text and problems.append(m.text + repr(m.location)))
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems


def assert_no_violation(page, problems) -> None:
    assert page.evaluate("window.cspViolations") == [] and problems == [], (page.url, problems)


def log_in(page, base_url: str, path: str, username: str, password: str) -> None:
    page.goto(base_url + path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[type=submit]")


def test_chat_page_streams_under_the_policy(context, chat_server):
    page, problems = watched(context)
    log_in(page, chat_server.url, "/accounts/login/?next=/", "alice", USERS["alice"])
    page.wait_for_selector("body[data-ready='1']")
    chat = ChatPage(page, chat_server.url, chat_server.database_url)
    generation_id = chat.send("What does a Content-Security-Policy stop?")
    stored = chat.wait_stored_terminal(generation_id)
    chat.wait_state("ended")
    assert chat.client_text() == stored["text"]
    assert page.evaluate("document.querySelector('meta[name=csrf-token]') !== null")
    assert_no_violation(page, problems)


def test_admin_works_under_the_policy(context, chat_server):
    username, password = OPERATOR
    manage("create_demo_user", "--username", username, "--password", password, env={**TEST_ENV, "DATABASE_URL": chat_server.database_url})
    page, problems = watched(context)
    log_in(page, chat_server.url, "/admin/login/?next=/admin/", username, password)
    page.wait_for_selector("#site-name")
    for path in ("/admin/chat/generation/", "/admin/chat/conversation/", "/admin/auth/user/1/change/"):
        page.goto(chat_server.url + path)
        page.wait_for_load_state("networkidle")
        assert_no_violation(page, problems)
    # The admin's own scripts run: the "select all" checkbox ticks every row.
    page.goto(chat_server.url + "/admin/auth/user/")
    page.click("#action-toggle")
    assert page.evaluate("[...document.querySelectorAll('input.action-select')].every((box) => box.checked)")
    assert_no_violation(page, problems)


def test_api_docs_work_under_the_policy(context, chat_server):
    page, problems = watched(context)
    page.goto(chat_server.url + "/api/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    page.locator(".opblock-summary-path", has_text="/api/auth/token").first.click()
    page.wait_for_selector(".opblock-body")
    page.wait_for_load_state("networkidle")
    assert_no_violation(page, problems)
