"""The pure client modules, run in Chromium: the SSE decoder, the Markdown renderer, the message tree, the backoff.

The files are served straight from static/ through Playwright's request
routing, so these tests need no server.
"""

import json
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "static"
ORIGIN = "http://modules.test"


@pytest.fixture(scope="module")
def js(chromium):
    context = chromium.new_context()
    page = context.new_page()

    def serve(route):
        path = STATIC / route.request.url.removeprefix(ORIGIN + "/static/")
        if route.request.url.startswith(ORIGIN + "/static/") and path.is_file():
            route.fulfill(status=200, body=path.read_bytes(), content_type="text/javascript")
        else:
            route.fulfill(status=200, body="<!doctype html><title>modules</title>", content_type="text/html")

    page.route(f"{ORIGIN}/**", serve)
    page.goto(ORIGIN + "/")
    yield page
    context.close()


def run(js, module: str, body: str, arg=None):
    """Evaluate `body` (an async function body) with the module's exports as `m`."""
    return js.evaluate(
        f"async (arg) => {{ const m = await import('/static/chat/{module}'); {body} }}",
        arg,
    )


# --- SSE decoding (WHATWG event stream interpretation) ------------------------------

DECODE = """
    const events = [], retries = [], comments = [];
    const parser = new m.SSEParser({
        onEvent: (e) => events.push(e), onRetry: (r) => retries.push(r), onComment: (c) => comments.push(c),
    });
    for (const chunk of arg) parser.feed(chunk);
    return { events, retries, comments, lastEventId: parser.lastEventId };
"""


def decode(js, *chunks: str) -> dict:
    return run(js, "sse-parser.js", DECODE, list(chunks))


@pytest.mark.parametrize(
    "chunks, expected",
    [
        (["data: hello\n\n"], [{"type": "message", "data": "hello", "id": ""}]),
        (["event: token\nid: 3\ndata: {\"seq\":3}\n\n"], [{"type": "token", "data": '{"seq":3}', "id": "3"}]),
        # Multi-line data joins with LF; the last LF is dropped.
        (["data: a\ndata: b\n\n"], [{"type": "message", "data": "a\nb", "id": ""}]),
        # CRLF and lone CR end lines too.
        (["data: a\r\ndata: b\r\n\r\n", "data: c\rdata: d\r\r"], [
            {"type": "message", "data": "a\nb", "id": ""}, {"type": "message", "data": "c\nd", "id": ""}]),
        # Only one leading space is stripped from a value; no colon means an empty value.
        (["data:  two spaces\n\n", "data\n\n"], [
            {"type": "message", "data": " two spaces", "id": ""}, {"type": "message", "data": "", "id": ""}]),
        # A field split across chunks, and a CRLF split between two chunks.
        (["da", "ta: spl", "it\r", "\n\r", "\n"], [{"type": "message", "data": "split", "id": ""}]),
        # An event without data is not dispatched, but its id is kept for the next one.
        (["id: 7\nevent: token\n\n", "data: x\n\n"], [{"type": "message", "data": "x", "id": "7"}]),
        # An id with NULL is ignored; unknown fields are ignored; an unfinished event is not dispatched.
        (["id: 1\ndata: a\n\n", "id: 2\0\nfoo: bar\ndata: b\n\n", "data: unfinished"], [
            {"type": "message", "data": "a", "id": "1"}, {"type": "message", "data": "b", "id": "1"}]),
        # A leading BOM is skipped.
        (["\ufeffdata: bom\n\n"], [{"type": "message", "data": "bom", "id": ""}]),
    ],
)
def test_sse_decoding(js, chunks, expected):
    assert decode(js, *chunks)["events"] == expected


def test_sse_retry_and_comments(js):
    result = decode(js, ": stream\nretry: 1000\n\n", ": keepalive\n", "retry: soon\nretry: 250\n\n")
    assert result["retries"] == [1000, 250]
    assert result["comments"] == ["stream", "keepalive"]
    assert result["events"] == []


def test_sse_last_event_id_persists_across_events(js):
    result = decode(js, "id: 5\ndata: a\n\n", "data: b\n\n", "id\ndata: c\n\n")
    assert [e["id"] for e in result["events"]] == ["5", "5", ""]
    assert result["lastEventId"] == ""


def test_sse_utf8_split_inside_a_character(js):
    """Bytes of one character arrive in two chunks: the streaming TextDecoder joins them."""
    events = run(
        js,
        "sse-parser.js",
        """
        const events = [];
        const parser = new m.SSEParser({ onEvent: (e) => events.push(e) });
        const bytes = new TextEncoder().encode('data: h\u00e9llo \u2603\\n\\n');
        for (let i = 0; i < bytes.length; i++) parser.feed(bytes.slice(i, i + 1));
        return events;
        """,
    )
    assert events == [{"type": "message", "data": "h\u00e9llo \u2603", "id": ""}]


# --- Markdown: marked + highlight.js + DOMPurify, safe by construction ----------------------

RENDER = """
    const div = document.createElement('div');
    div.append(m.renderMarkdown(arg[0], arg[1]));
    return div.innerHTML;
"""

LINK = 'target="_blank" rel="noopener noreferrer nofollow"'
COPY = '<button type="button" class="copy-code" aria-label="Copy code">Copy</button>'


def markdown(js, text: str, **options) -> str:
    return run(js, "markdown.js", RENDER, [text, options])


def code_block(language: str, code_class: str, html: str) -> str:
    return (
        f'<div class="code-block"><div class="code-head"><span class="code-lang">{language}</span>{COPY}</div>'
        f"<pre><code{code_class}>{html}</code></pre></div>"
    )


@pytest.mark.parametrize(
    "text, html",
    [
        ("Hello **world** and *you*", "<p>Hello <strong>world</strong> and <em>you</em></p>\n"),
        ("line one\nline two", "<p>line one<br>line two</p>\n"),
        ("para one\n\npara two", "<p>para one</p>\n<p>para two</p>\n"),
        ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"),
        ("- a\n  - nested\n- b", "<ul>\n<li>a<ul>\n<li>nested</li>\n</ul>\n</li>\n<li>b</li>\n</ul>\n"),
        ("3. three\n4. four", '<ol start="3">\n<li>three</li>\n<li>four</li>\n</ol>\n'),
        (
            "- [x] done\n- [ ] to do",
            '<ul>\n<li><input type="checkbox" disabled="" checked="" aria-label="Done"> done</li>\n'
            '<li><input type="checkbox" disabled="" aria-label="Not done"> to do</li>\n</ul>\n',
        ),
        (
            "| a | b |\n|---|--:|\n| 1 | 2 |",
            '<table>\n<thead>\n<tr>\n<th>a</th>\n<th align="right">b</th>\n</tr>\n</thead>\n'
            '<tbody><tr>\n<td>1</td>\n<td align="right">2</td>\n</tr>\n</tbody></table>\n',
        ),
        ("## Two\n### Three", "<h2>Two</h2>\n<h3>Three</h3>\n"),
        ("~~gone~~", "<p><del>gone</del></p>\n"),
        (
            "```python\nx = 1 < 2\n```",
            code_block(
                "python",
                ' class="hljs language-python"',
                'x = <span class="hljs-number">1</span> &lt; <span class="hljs-number">2</span>',
            ),
        ),
        ("```\nunclosed while streaming", code_block("text", ' class="hljs"', "unclosed while streaming")),
        ("use `a<b>` here", "<p>use <code>a&lt;b&gt;</code> here</p>\n"),
        ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>\n"),
        ("---", "<hr>\n"),
        ("[docs](https://example.org/a?b=1&c=2)", f'<p><a href="https://example.org/a?b=1&amp;c=2" {LINK}>docs</a></p>\n'),
        ("see https://example.org/x.", f'<p>see <a href="https://example.org/x" {LINK}>https://example.org/x</a>.</p>\n'),
        ("[mail](mailto:a@example.org)", f'<p><a href="mailto:a@example.org" {LINK}>mail</a></p>\n'),
        ("snake_case_name stays", "<p>snake_case_name stays</p>\n"),
    ],
)
def test_markdown(js, text, html):
    assert markdown(js, text) == html


@pytest.mark.parametrize(
    "text, html",
    [
        ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"),
        ('<img src=x onerror="alert(1)">', '<p>&lt;img src=x onerror="alert(1)"&gt;</p>\n'),
        ("[click](javascript:alert(1))", "<p>[click](javascript:alert(1))</p>\n"),
        ("[a](JaVaScRiPt:alert(1))", "<p>[a](JaVaScRiPt:alert(1))</p>\n"),
        ("[x](data:text/html,<b>hi</b>)", "<p>[x](data:text/html,&lt;b&gt;hi&lt;/b&gt;)</p>\n"),
        ("[x](//evil.example/path)", "<p>[x](//evil.example/path)</p>\n"),
        ("[r][1]\n\n[1]: javascript:alert(1)", "<p>[r][1]</p>\n"),
        # No remote images: a safe link to one, or its text.
        ("![pic](https://x.org/a.png)", f'<p><a href="https://x.org/a.png" {LINK}>pic</a></p>\n'),
        ("![pic](javascript:alert(1))", "<p>![pic](javascript:alert(1))</p>\n"),
        ('**<b onclick="x">bold</b>**', '<p><strong>&lt;b onclick="x"&gt;bold&lt;/b&gt;</strong></p>\n'),
        (
            "```html\n<iframe src=x></iframe>\n```",
            code_block(
                "html",
                ' class="hljs language-html"',
                '<span class="hljs-tag">&lt;<span class="hljs-name">iframe</span> <span class="hljs-attr">src</span>='
                '<span class="hljs-string">x</span>&gt;</span><span class="hljs-tag">&lt;/<span class="hljs-name">iframe</span>'
                "&gt;</span>",
            ),
        ),
        # A quote cannot break out of the attribute: it stays inside the (escaped) URL.
        (
            '[a](https://x.org/"onmouseover="alert(1))',
            f'<p><a href="https://x.org/&quot;onmouseover=&quot;alert(1)" {LINK}>a</a></p>\n',
        ),
    ],
)
def test_markdown_escapes_html(js, text, html):
    assert markdown(js, text) == html


def test_markdown_never_creates_active_elements(js):
    hostile = "\n".join(
        [
            "<script>window.__pwned = 1</script>",
            "<img src=x onerror=\"window.__pwned = 2\">",
            "<svg onload=\"window.__pwned = 3\"></svg>",
            "- <a href=\"javascript:window.__pwned=4\">x</a>",
            "`</code><script>window.__pwned = 5</script>`",
            "<iframe srcdoc='<script>parent.__pwned = 6</script>'></iframe>",
        ]
    )
    result = run(
        js,
        "markdown.js",
        """
        const div = document.createElement('div');
        document.body.append(div);
        div.append(m.renderMarkdown(arg));
        const tags = [...div.querySelectorAll('*')].map((el) => el.tagName.toLowerCase());
        const attributes = [...div.querySelectorAll('*')].flatMap((el) => [...el.attributes].map((a) => a.name));
        await new Promise((resolve) => setTimeout(resolve, 50));
        return { tags, attributes, pwned: window.__pwned ?? null, text: div.textContent };
        """,
        hostile,
    )
    assert set(result["tags"]) <= {"p", "br", "ul", "li", "code"}
    assert result["attributes"] == []
    assert result["pwned"] is None
    assert "<script>window.__pwned = 1</script>" in result["text"]


def test_json_answers_are_pretty_printed_and_highlighted(js):
    html = markdown(js, '{"a": [1, "two"]}', format="json")
    assert html.startswith('<div class="code-block"><div class="code-head"><span class="code-lang">json</span>')
    text = run(js, "markdown.js", "const d = document.createElement('div'); d.append(m.renderMarkdown(arg, { format: 'json' })); "
               "return d.querySelector('code').textContent;", '{"a": [1, "two"]}')
    assert text == '{\n  "a": [\n    1,\n    "two"\n  ]\n}'
    # Not (yet) a whole document, as while it streams: shown as sent.
    partial = run(js, "markdown.js", "const d = document.createElement('div'); d.append(m.renderMarkdown(arg, { format: 'json' })); "
                  "return d.querySelector('code').textContent;", '{"a": [1, "tw')
    assert partial == '{"a": [1, "tw'


@pytest.mark.parametrize(
    "text, shown",
    [
        ("Intro\n\n| a | b |", "Intro\n"),  # a header row alone is not yet a table
        ("Intro\n\n| a | b |\n", "Intro\n"),
        ("Intro\n\n| a | b |\n|---|--", "Intro\n"),
        ("| a | b |\n|---|---|\n| 1 | 2", "| a | b |\n|---|---|"),  # the unfinished row waits for its newline
        ("| a | b |\n|---|---|\n| 1 | 2 |\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"),
        ("```python\nx = 1", "```python\nx = 1"),  # an unclosed fence shows: it renders as code
        ("plain text", "plain text"),
        # An unfinished "-" (a list item on its way) or "=" line must not make the line above a heading.
        ("Steps:\n-", "Steps:\n"),
        ("Steps:\n- ", "Steps:\n"),
        ("Title\n==", "Title\n"),
        ("Steps:\n- one", "Steps:\n- one"),
        ("Title\n---\n", "Title\n---\n"),  # finished: the model meant it
    ],
)
def test_streaming_holds_back_an_unfinished_table(js, text, shown):
    assert run(js, "markdown.js", "return m.streamingText(arg);", text) == shown


def test_every_prefix_of_a_rich_answer_renders(js):
    """Mid-stream, every prefix (unclosed fences, half tables, open emphasis) renders without throwing."""
    answer = "# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n  - two\n\n```js\nconst x = `a`;\n```\n\n**bold *both***"
    failures = run(
        js,
        "markdown.js",
        """
        const failures = [];
        for (let i = 0; i <= arg.length; i++) {
            try { m.renderMarkdown(m.streamingText(arg.slice(0, i))); } catch (error) { failures.push([i, String(error)]); }
        }
        return failures;
        """,
        answer,
    )
    assert failures == []


# --- Backoff and configuration ---------------------------------------------------------------


def test_backoff_is_exponential_capped_with_full_jitter(js):
    delays = run(
        js,
        "stream-client.js",
        """
        const config = { backoffBaseMs: 500, backoffCapMs: 8000 };
        const at = (attempt, r) => m.backoffDelay(attempt, config, () => r);
        return [0, 1, 2, 3, 4, 5, 10].map((n) => [at(n, 0), at(n, 0.999999)]);
        """,
    )
    upper = [d[1] for d in delays]
    assert [d[0] for d in delays] == [0] * 7  # full jitter: anything from zero
    assert upper == [499, 999, 1999, 3999, 7999, 7999, 7999]  # doubling, capped at 8 s


def test_retry_after_is_a_floor_with_jitter_on_top(js):
    got = run(
        js,
        "recovery.js",
        """
        const config = { backoffBaseMs: 500, backoffCapMs: 8000 };
        const now = Date.parse("2026-12-07T12:00:00Z");
        const after = (value) => m.retryAfterMs(new Response("", { headers: value === null ? {} : { "Retry-After": value } }), now);
        const refused = new Response('{"error": {"code": "overloaded", "message": "Busy."}}', {
            status: 503, headers: { "Retry-After": "5", "Content-Type": "application/json" },
        });
        const failure = await m.failureFromResponse(refused);
        const delay = (f, attempt, r) => m.retryDelay(f, attempt, config, () => r);
        return {
            parsed: [after("5"), after(" 12 "), after("Mon, 07 Dec 2026 12:00:30 GMT"), after("Mon, 07 Dec 2026 11:00:00 GMT"),
                     after("soon"), after("-3"), after("99999"), after(null)],
            failure: { retryable: failure.retryable, code: failure.code, retryAfterMs: failure.retryAfterMs },
            delays: [delay(failure, 0, 0), delay(failure, 0, 0.999999), delay(failure, 10, 0.999999),
                     delay(new m.AttemptFailed("cut"), 2, 0.999999)],
        };
        """,
    )
    # Seconds or an HTTP date; a date past, a bad value or none: 0; capped at 5 minutes.
    assert got["parsed"] == [5000, 12000, 30000, 0, 0, 0, 300_000, 0]
    assert got["failure"] == {"retryable": True, "code": "overloaded", "retryAfterMs": 5000}
    # At least what the server asked, plus up to half of it; a longer backoff wins; none asked: the backoff.
    assert got["delays"] == [5000, 7499, 7999, 1999]


STREAM_AFTER_REFUSAL = """
    const calls = [];
    const states = [];
    const body = 'id: 1\\nevent: token\\ndata: {"seq":1,"text":"hi"}\\n\\nid: 1\\nevent: done\\ndata: {"status":"complete"}\\n\\n';
    const client = new m.GenerationStream({
        generationId: "g",
        config: m.clientConfig({ renderWindowMs: 0, backoffBaseMs: 1, backoffCapMs: 1 }),
        fetch: async () => {
            calls.push(performance.now());
            if (calls.length === 1) {
                return new Response('{"error": {"code": "overloaded", "message": "Busy."}}',
                                    { status: 503, headers: { "Retry-After": "1" } });
            }
            return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
        },
        onState: (state, detail) => states.push({ state, waitMs: detail.retryAt ? detail.retryAt - Date.now() : null }),
    });
    await client.start();
    return { gapMs: calls[1] - calls[0], calls: calls.length, states, text: client.text, status: client.result?.status };
"""


def test_the_stream_waits_as_long_as_a_busy_server_asks(js):
    """A 503 with Retry-After: 1 and a backoff of 1 ms: the next attempt comes after the second, not at once."""
    got = run(js, "stream-client.js", STREAM_AFTER_REFUSAL)
    assert got["calls"] == 2 and got["text"] == "hi" and got["status"] == "complete"
    interrupted = next(s for s in got["states"] if s["state"] == "interrupted")
    assert interrupted["waitMs"] >= 990  # told to the page: "retrying in 1 s" or more
    assert got["gapMs"] >= 990  # a timer never fires early; the slack is for clock granularity


def test_constants_and_overrides(js):
    config = run(
        js,
        "stream-client.js",
        """
        window.CHAT_CLIENT_CONFIG = { stallMs: 1500, backoffBaseMs: -1, bogus: 1 };
        const merged = m.clientConfig({ renderWindowMs: 16 });
        delete window.CHAT_CLIENT_CONFIG;
        return { defaults: m.DEFAULT_CONFIG, merged, window: m.RENDER_WINDOW_MS, stall: m.STALL_MS };
        """,
    )
    assert config["window"] == 48 and config["stall"] == 10_000
    assert config["defaults"]["maxFailedAttempts"] == 3
    assert config["merged"]["stallMs"] == 1500
    assert config["merged"]["renderWindowMs"] == 16
    assert config["merged"]["backoffBaseMs"] == config["defaults"]["backoffBaseMs"]  # invalid values are ignored
    assert "bogus" not in config["merged"]
    assert json.dumps(config["merged"])  # plain data


# --- tok/s: live tokens over live time ----------------------------------------------------------

LIVE_RATE = """
    const { GenerationStream, clientConfig } = m;
    const encoder = new TextEncoder();
    let push, end;
    const body = new ReadableStream({ start(c) { push = (s) => c.enqueue(encoder.encode(s)); end = () => c.close(); } });
    const token = (seq) => `id: ${seq}\\nevent: token\\ndata: {"seq":${seq},"text":"t${seq} "}\\n\\n`;
    const chunk = (seq, last) => `id: ${last}\\nevent: token\\ndata: {"seq":${last},"text":"t${seq}-${last} "}\\n\\n`;
    let clock = 0;
    const client = new GenerationStream({
        generationId: "g", lastEventId: "40", text: "", firstSeq: 1,
        config: clientConfig({ renderWindowMs: 0 }),
        fetch: async () => new Response(body, { status: 200 }),
        now: () => clock,
    });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
    const running = client.start();
    await settle();
    // After a refresh: what was missed arrives at once, as two replayed chunks in one read.
    push(chunk(41, 80) + chunk(81, 100));
    await settle();
    // Then 10 live tokens, one every 100 ms of (fake) time.
    for (let seq = 101; seq <= 110; seq++) {
        clock += 100;
        push(token(seq));
        await settle();
    }
    const rate = client.tokensPerSecond;
    push('id: 110\\nevent: done\\ndata: {"status":"complete"}\\n\\n');
    end();
    await running;
    await settle(); // the final state is applied with the last render
    return { rate, tokens: client.tokens, state: client.state };
"""


def test_tokens_per_second_counts_only_live_tokens(js):
    """A replay after a refresh (60 tokens in one read) is not counted as if it had streamed in no time."""
    result = run(js, "stream-client.js", LIVE_RATE)
    assert result["rate"] == 10.0  # 10 live tokens over 1 s, not (60 + 10) tokens
    assert result["tokens"] == 110
    assert result["state"] == "ended"


# --- The retry loop shared by the answer stream and the event channel --------------------------

RETRY_LOOP = """
    const { RetryLoop, AttemptFailed } = m;
    const config = { wakeJitterMs: 0 };
    const tick = () => new Promise((resolve) => setTimeout(resolve, 10));
    const until = async (condition) => { for (let i = 0; i < 300 && !condition(); i++) await tick(); return condition(); };
    let online = true;
    Object.defineProperty(navigator, 'onLine', { configurable: true, get: () => online });
    const results = {};

    // A 404 is final: one attempt, one onFailure that stops it, and the loop is closed.
    {
        const log = [];
        const loop = new RetryLoop({
            config,
            attempt: async () => { log.push('attempt'); throw new AttemptFailed('gone', { retryable: false, status: 404 }); },
            onFailure: (failure, { failures }) => { log.push(`failure ${failure.status} ${failures}`); return failure.retryable ? 0 : null; },
        });
        await loop.run();
        results.final = { log, closed: loop.closed };
    }

    // Offline: no attempt and no failure until `online`; a failure that comes with going offline is no strike.
    {
        const log = [];
        let calls = 0;
        const loop = new RetryLoop({
            config,
            attempt: async () => {
                calls++;
                log.push(`attempt ${calls}`);
                if (calls === 1) { online = false; throw new AttemptFailed('The connection was lost.'); }
                return true;
            },
            onFailure: () => { log.push('failure'); return 0; },
            onOffline: () => log.push('offline'),
        });
        const running = loop.run();
        await until(() => loop.waiting === 'online');
        const waiting = loop.waiting;
        online = true;
        window.dispatchEvent(new Event('online'));
        await running;
        results.offline = { log, waiting, failures: loop.failures };
    }

    // A long backoff ends at once when the page becomes visible; a poll is not a failure.
    {
        const log = [];
        let calls = 0;
        const loop = new RetryLoop({
            config,
            attempt: async () => {
                calls++;
                log.push(`attempt ${calls}`);
                if (calls === 1) return 5; // poll again in 5 ms
                if (calls === 2) throw new AttemptFailed('No data for 10 s.');
                return true;
            },
            onFailure: (failure, { failures }) => { log.push(`failure ${failures}`); return 1e9; },
        });
        const running = loop.run();
        await until(() => loop.waiting === 'backoff');
        document.dispatchEvent(new Event('visibilitychange'));
        await running;
        results.visible = { log };
    }
    delete navigator.onLine;
    return results;
"""


def test_retry_loop_final_errors_offline_and_wake_ups(js):
    results = run(js, "recovery.js", RETRY_LOOP)
    assert results["final"] == {"log": ["attempt", "failure 404 0"], "closed": True}
    assert results["offline"] == {"log": ["attempt 1", "offline", "attempt 2"], "waiting": "online", "failures": 0}
    assert results["visible"] == {"log": ["attempt 1", "attempt 2", "failure 1", "attempt 3"]}


# --- The message tree: versions and the branch shown ------------------------------------------

TREE = """
    const messages = [
        { id: 1, parent_id: null, role: "user" }, { id: 2, parent_id: 1, role: "assistant" },
        { id: 3, parent_id: 2, role: "user" }, { id: 4, parent_id: 3, role: "assistant" },
        { id: 5, parent_id: 2, role: "user" }, { id: 6, parent_id: 5, role: "assistant" },  // an edit of 3
        { id: 7, parent_id: 1, role: "assistant" },  // a regenerated answer to 1
    ];
    const tree = new m.MessageTree(messages);
    const ids = () => tree.branch().map((message) => message.id);
    const seen = { newest: ids(), siblings: [tree.siblings(3), tree.siblings(7)] };
    tree.pick(2);
    seen.first = ids();  // the first answer, then the way to its newest message (the edit)
    tree.pick(3);
    seen.original = ids();
    tree.add({ id: 8, parent_id: 4, role: "user" });
    seen.added = ids();
    tree.pick(7);
    seen.regenerated = ids();
    return seen;
"""


def test_message_tree_shows_the_newest_branch_and_picked_versions(js):
    seen = run(js, "branches.js", TREE)
    assert seen["newest"] == [1, 7]
    assert seen["siblings"] == [[3, 5], [2, 7]]
    assert seen["first"] == [1, 2, 5, 6]
    assert seen["original"] == [1, 2, 3, 4]
    assert seen["added"] == [1, 2, 3, 4, 8]
    assert seen["regenerated"] == [1, 7]


# --- One request per answer: the POST's stream (api.js) ------------------------------

API_STREAM = """
    const chunks = arg.chunks;
    globalThis.fetch = async (url, init) => {
        const body = new ReadableStream({
            pull(controller) {
                const next = chunks.shift();
                if (next === undefined) return arg.cut ? controller.error(new TypeError("network")) : controller.close();
                controller.enqueue(new TextEncoder().encode(next));
            },
        });
        return new Response(body, { status: 201, headers: { "Content-Type": "text/event-stream" } });
    };
    try {
        const { data, stream } = await m.apiStream("POST", "/api/conversations/1/messages", { content: "hi" });
        return { data, rest: await stream.text() };
    } catch (error) {
        return { status: error.status, message: error.message };
    }
"""
POSTED = 'event: posted\ndata: {"generation": {"id": "g1"}}\n\n'


def test_api_stream_gives_the_posted_answer_and_the_whole_stream(js):
    # `posted` split across chunks; the stream handed on holds every byte, from the first.
    chunks = [": stream\nretry: 1000\n\n" + POSTED[:20], POSTED[20:], "id: 1\nevent: token\ndata: {}\n\n"]
    got = run(js, "api.js", API_STREAM, {"chunks": chunks, "cut": False})
    assert got == {"data": {"generation": {"id": "g1"}}, "rest": "".join(chunks)}


def test_api_stream_cut_before_posted_is_a_network_error(js):
    got = run(js, "api.js", API_STREAM, {"chunks": [": stream\n\n", POSTED[:25]], "cut": True})
    assert got == {"status": 0, "message": "The connection was lost before the answer started."}


# --- Dead connections: silence against a stalled model --------------------------------------------

def test_the_servers_keepalive_period_sets_how_long_a_silence_means_a_dead_connection(js):
    config = run(
        js,
        "stream-client.js",
        """
        const meta = Object.assign(document.createElement("meta"), { name: "chat-stream-keepalive-ms", content: "5000" });
        document.head.append(meta);
        const derived = m.clientConfig();
        window.CHAT_CLIENT_CONFIG = { silenceMs: 700 };
        const chosen = m.clientConfig();
        delete window.CHAT_CLIENT_CONFIG;
        meta.remove();
        return { derived, chosen, defaults: m.DEFAULT_CONFIG };
        """,
    )
    assert (config["derived"]["keepaliveMs"], config["derived"]["silenceMs"]) == (5000, 10_500)
    assert (config["chosen"]["keepaliveMs"], config["chosen"]["silenceMs"]) == (5000, 700)
    assert (config["defaults"]["keepaliveMs"], config["defaults"]["silenceMs"]) == (1500, 3500)
    assert (config["derived"]["responseMs"], config["defaults"]["responseMs"]) == (5500, 2000)


# A response body the test feeds by hand: `push` text, `end` it; `respond` decides each call's answer.
FED_STREAM = """
    const encoder = new TextEncoder();
    const fed = () => {
        let controller;
        const body = new ReadableStream({ start(c) { controller = c; } });
        return {
            response: new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } }),
            push: (s) => controller.enqueue(encoder.encode(s)),
            end: () => controller.close(),
        };
    };
    const token = (seq) => `id: ${seq}\\nevent: token\\ndata: {"seq":${seq},"text":"t${seq} "}\\n\\n`;
    const done = (seq) => `id: ${seq}\\nevent: done\\ndata: {"seq":${seq},"status":"complete"}\\n\\n`;
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const calls = [], states = [], heads = [];
    const follow = (respond, overrides) => {
        const client = new m.GenerationStream({
            generationId: "g",
            config: m.clientConfig({ renderWindowMs: 0, backoffBaseMs: 1, backoffCapMs: 1, ...overrides }),
            fetch: (url, init) => {
                if (init.method === "HEAD") {  // draining the pool of dead connections
                    heads.push(performance.now());
                    return Promise.resolve(new Response(null, { status: 405 }));
                }
                calls.push({ lastEventId: init.headers["Last-Event-ID"] ?? null, at: performance.now() });
                return respond(calls.length, init.signal);
            },
            onState: (state, detail) => states.push({ state, ...detail, at: performance.now() }),
        });
        return client;
    };
"""


def test_keepalives_without_tokens_are_a_stalled_model_not_a_dead_connection(js):
    got = run(
        js,
        "stream-client.js",
        FED_STREAM
        + """
        const stream = fed();
        const client = follow(async () => stream.response, { stallMs: 250, silenceMs: 400 });
        const running = client.start();
        stream.push(token(1));
        for (let i = 0; i < 8; i++) { await sleep(60); stream.push(": keepalive\\n\\n"); }
        stream.push(token(2) + done(2));
        await running;
        await sleep(20);  // the end is shown with the render after it
        return { calls: calls.length, states, text: client.text };
        """,
    )
    assert got["calls"] == 1, "a connection that sends keepalives is alive: no reconnect"
    assert [s["state"] for s in got["states"]] == ["connecting", "streaming", "interrupted", "streaming", "ended"]
    stalled = got["states"][2]
    assert stalled["stalled"] is True and stalled["reason"].startswith("The model has sent nothing for")
    assert got["text"] == "t1 t2 "


def test_a_silent_connection_is_given_up_and_a_new_one_opened_at_once(js):
    """No byte after the first token (a black hole), then a request with no response at all: each given up after silenceMs."""
    got = run(
        js,
        "stream-client.js",
        FED_STREAM
        + """
        const first = fed(), third = fed();
        const client = follow((n, signal) => {
            if (n === 1) { first.push(token(1)); return first.response; }  // then silent for good
            if (n === 2) return new Promise((_, reject) => signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
            third.push(token(2) + done(2));
            return third.response;
        }, { silenceMs: 300, responseMs: 400, stallMs: 10000 });
        await client.start();
        return { calls, states, text: client.text, heads: heads.length };
        """,
    )
    assert [c["lastEventId"] for c in got["calls"]] == [None, "1", "1"]
    assert got["heads"] == 12, "before each reconnect, six small requests drain the pool of dead connections"
    gaps = [b["at"] - a["at"] for a, b in zip(got["calls"], got["calls"][1:])]
    assert 290 <= gaps[0] < 1500 and 390 <= gaps[1] < 1500, gaps  # silenceMs, then responseMs: no backoff on top
    reconnecting = [s for s in got["states"] if s["state"] == "interrupted"]
    assert [s["reason"] for s in reconnecting] == ["No data for 0.3 s.", "No answer from the server for 0.4 s."]
    assert all(s["reconnecting"] for s in reconnecting)
    assert [s["failures"] for s in reconnecting] == [1, 1], "no answer at all is the network's fault: no strike"
    assert got["text"] == "t1 t2 "


def test_back_online_a_live_looking_connection_is_replaced_at_once(js):
    """After a switch of network the old connection may be dead without a word: `online` opens a new one, no strike."""
    got = run(
        js,
        "stream-client.js",
        FED_STREAM
        + """
        const first = fed(), second = fed();
        const client = follow((n) => {
            if (n === 1) { first.push(token(1)); return first.response; }
            second.push(token(2) + done(2));
            return second.response;
        }, { silenceMs: 60000, wakeJitterMs: 0 });
        const running = client.start();
        while (client.text === "") await sleep(5);
        window.dispatchEvent(new Event("online"));
        await running;
        return { calls, states, text: client.text, failures: client.loop.failures };
        """,
    )
    assert [c["lastEventId"] for c in got["calls"]] == [None, "1"]
    woken = next(s for s in got["states"] if s["state"] == "interrupted")
    assert woken["reason"] == "The network changed." and woken["failures"] == 0
    assert got["text"] == "t1 t2 "
