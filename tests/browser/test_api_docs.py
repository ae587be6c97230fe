"""The interactive API docs (/api/docs, Swagger UI served by the app) load the spec without an error."""

import pytest

pytestmark = pytest.mark.timeout(60)


def test_api_docs_render_every_operation_without_a_parser_error(chromium, chat_server, alice_state):
    context = chromium.new_context(storage_state=alice_state)
    outside = []

    def local_only(route):
        # Swagger UI's files come from the app's own static files, never a CDN.
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{chat_server.url}/api/docs")
        page.wait_for_selector(".swagger-ui .opblock, .swagger-ui .errors-wrapper")
        assert page.locator(".swagger-ui .errors-wrapper").count() == 0, page.locator(".errors-wrapper").inner_text()
        page.wait_for_function("() => document.querySelectorAll('.swagger-ui .opblock').length >= 10")
        assert "Parser error" not in page.locator("body").inner_text()
        assert page.locator(".opblock-summary-path[data-path='/api/generations/{generation_id}/stream']").count() == 1
        assert not outside and not errors
    finally:
        context.close()
