from tests.browser.test_chat_stream import PROMPT
def test_dbg(make_page):
    chat = make_page(viewport={"width": 900, "height": 420})
    chat.page.add_init_script("")
    chat.send(PROMPT)
    chat.wait_text(150)
    chat.page.evaluate("window.__log=[]; document.getElementById('messages').addEventListener('scroll', e => window.__log.push(['s', e.target.scrollTop, e.target.scrollHeight, performance.now()|0]))")
    chat.page.mouse.move(450, 200)
    chat.page.mouse.wheel(0, -2000)
    chat.page.wait_for_timeout(1500)
    print(chat.page.evaluate("window.__log"))
    print(chat.page.evaluate("[document.getElementById('messages').scrollTop, document.getElementById('messages').scrollHeight, document.getElementById('messages').clientHeight]"))
