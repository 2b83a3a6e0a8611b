"""The web widget end to end in headless Chromium against a real uvicorn on loopback.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``make browser``; no browser
download) drive the demo page at ``/`` with the keyboard only: Tab to the chat bubble, Enter,
type a question, read the streamed answer and its sources, reload (the transcript comes back),
Escape (focus returns to the bubble), and two XSS attempts (a message and an ingested document)
that must not run. One browser serves the whole module. The browser can reach loopback only.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the static checks still run; the browser tests skip
    webdriver = None  # type: ignore[assignment]

WIDGET = Path(__file__).resolve().parents[2] / "assistant" / "static" / "widget.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


# -- static checks (no browser) ---------------------------------------------------------------
def _code() -> str:
    """widget.js without comments, so the checks look at code only."""
    text = WIDGET.read_text(encoding="utf-8")
    return re.sub(r"/\*.*?\*/|(?<![:\\\"'])//[^\n]*", "", text, flags=re.S)


def test_widget_source_has_no_html_sinks_or_eval():
    code = _code()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser"):
        assert sink not in code, sink
    assert not re.search(r"\beval\s*\(|\bFunction\s*\(|setTimeout\s*\(\s*['\"]", code)
    assert not re.search(r"setAttribute\(\s*['\"](href|src|style|on\w+)['\"]", code)
    assert "attachShadow" in code and "textContent" in code


def test_widget_is_small_and_loads_nothing_external():
    raw = WIDGET.read_bytes()
    assert len(raw) < 16 * 1024, len(raw)
    urls = set(re.findall(r"https?://[^\s\"')]+", _code()))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace is not a request
    assert "import(" not in _code() and "@import" not in _code()


# -- the browser ------------------------------------------------------------------------------
def _driver() -> Any:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium/chromedriver not installed (`make browser` installs them via apt)")
    if webdriver is None:
        pytest.skip("selenium is not installed (it is in the dev extras)")

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,800",
        # loopback only: every other host name fails to resolve; no background traffic
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _driver()  # skips before the (slow) live server starts when chromium is missing
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, live_server) -> Any:
    """The demo page, loaded once; tests run in file order and build on each other."""
    base = live_server[0]
    browser.get(base + "/")
    _wait(browser, "return !!document.querySelector('llmos-widget')")
    return browser


def _wait(driver: Any, script: str, timeout: float = 30.0, *args: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            state = driver.execute_script(_SNAPSHOT)
            raise AssertionError(f"timed out waiting for: {script}\nwidget: {state}")
        time.sleep(0.1)


_ROOT = "const r = document.querySelector('llmos-widget').shadowRoot;"
_SNAPSHOT = (
    _ROOT + "return {log: r.querySelector('ol').innerText, status: "
    "r.querySelector('.status').textContent, open: !r.querySelector('.panel').hidden}"
)


def _active(driver: Any) -> str:
    """What has the keyboard focus: 'page:<tag>' or 'widget:<class or tag>'."""
    return driver.execute_script(
        "const a = document.activeElement;"
        "if (!a || a.tagName !== 'LLMOS-WIDGET') return 'page:' + (a ? a.tagName : '');"
        "const s = a.shadowRoot.activeElement;"
        "return 'widget:' + (s ? (s.className || s.tagName.toLowerCase()) : '');"
    )


def _keys(driver: Any, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def _replies(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(
        _ROOT + "return [...r.querySelectorAll('ol > li')].map(li => ({"
        "cls: li.className, text: (li.querySelector('.text') || li).textContent,"
        "sources: [...li.querySelectorAll('.sources li')].map(s => s.textContent),"
        "links: [...li.querySelectorAll('.sources a')].map(a => a.href)}))"
    )


def _wait_reply(driver: Any, count: int) -> dict[str, Any]:
    """Wait until the ``count``-th assistant reply has finished streaming; return it."""
    _wait(
        driver,
        _ROOT + "const b = r.querySelectorAll('ol > li.bot');"
        "return b.length >= arguments[0] && !b[arguments[0] - 1].classList.contains('pending')"
        " && !r.querySelector('.send').disabled",
        60.0,
        count,
    )
    return [x for x in _replies(driver) if x["cls"] == "bot"][count - 1]


def _storage_session(driver: Any) -> str | None:
    return driver.execute_script(
        "const k = document.querySelector('script[data-key]').dataset.key.slice(0, 16);"
        "return localStorage.getItem('llmos:' + k + ':session');"
    )


# -- (a) keyboard only: open, ask, read the streamed answer and its sources ------------------
def test_keyboard_only_question_streams_answer_with_sources(page):
    # count text changes inside the shadow root while the reply streams in
    page.execute_script(
        _ROOT + "window.__chunks = 0; new MutationObserver(m => window.__chunks +="
        " m.filter(x => x.type === 'characterData').length)"
        ".observe(r, {subtree: true, characterData: true, childList: true});"
    )
    for _ in range(12):  # the nav links come first, then the chat bubble
        _keys(page, Keys.TAB)
        if _active(page) == "widget:bubble":
            break
    assert _active(page) == "widget:bubble"
    _keys(page, Keys.ENTER)  # Enter opens the panel and puts the caret in the message box
    _wait(page, _ROOT + "return !r.querySelector('.panel').hidden")
    assert _active(page) == "widget:textarea"
    dialog = page.execute_script(
        _ROOT + "const p = r.querySelector('[role=dialog]');"
        "return [p.getAttribute('aria-modal'), r.getElementById(p.getAttribute('aria-labelledby'))"
        ".textContent, r.querySelector('ol').getAttribute('aria-live'),"
        " r.querySelector('.bubble').getAttribute('aria-expanded')]"
    )
    assert dialog == ["false", "Juniper Home Assistant", "polite", "true"]
    # Shift+Enter is a new line, not a send
    _keys(page, "How long do refunds")
    ActionChains(page).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    assert page.execute_script(_ROOT + "return r.querySelector('textarea').value") == (
        "How long do refunds\n"
    )
    _keys(page, Keys.BACKSPACE, " take?", Keys.ENTER)
    reply = _wait_reply(page, 1)
    user = [x for x in _replies(page) if x["cls"] == "user"]
    assert user[-1]["text"] == "How long do refunds take?"
    assert "5 business days" in reply["text"], reply
    assert reply["sources"] and any("refund" in s.lower() for s in reply["sources"]), reply
    # chunks were appended to the reply's text node before the final text replaced it
    assert page.execute_script("return window.__chunks") >= 2
    assert _storage_session(page)
    # Tab moves from the message box to Send: everything is reachable by keyboard
    _keys(page, Keys.TAB)
    assert _active(page) == "widget:send"
    ActionChains(page).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert _active(page) == "widget:textarea"


# -- (b) reload: same session, transcript restored ---------------------------------------------
def test_reload_restores_the_transcript(page, live_server):
    session = _storage_session(page)
    before = [(x["cls"], x["text"]) for x in _replies(page) if x["cls"] in ("user", "bot")]
    page.refresh()
    _wait(page, _ROOT + "return r.querySelectorAll('ol > li.bot').length >= 1")
    after = [(x["cls"], x["text"]) for x in _replies(page) if x["cls"] in ("user", "bot")]
    assert after == before and _storage_session(page) == session
    sources = next(x["sources"] for x in _replies(page) if x["cls"] == "bot")
    assert sources  # sources come back with the stored turn
    # the server agrees: one session holding that turn
    demo_key = page.execute_script("return document.querySelector('script[data-key]').dataset.key")
    r = httpx.get(f"{live_server[0]}/v1/sessions/{session}", headers={"X-API-Key": demo_key})
    assert r.status_code == 200 and [t["user"] for t in r.json()["turns"]] == [
        "How long do refunds take?"
    ]


# -- (c) XSS: neither a message nor a document can run script ---------------------------------
XSS_MESSAGE = '<img src=x onerror="window.__xss=1"> what is this?'
XSS_DOC = (
    "# Quillon teapot warranty\n\n"
    "The Quillon teapot warranty lasts <script>window.__xss=2</script> seven years "
    '<img src=x onerror=window.__xss=3> from the day of delivery. <a href="javascript:'
    'window.__xss=4">Register it</a> with the Quillon card in the box.\n'
)


def _injected(page: Any) -> dict[str, Any]:
    return page.execute_script(
        _ROOT + "return {xss: window.__xss === undefined ? null : window.__xss,"
        " bad: r.querySelectorAll('script, img, iframe, object, embed, [onerror], [onload],"
        " style:not(:first-child), a[href^=javascript]').length,"
        " pageBad: document.querySelectorAll('img[src=x], [onerror]').length}"
    )


def test_xss_in_a_message_and_in_a_document_never_runs(page, live_server):
    base, admin, _, _ = live_server
    r = httpx.post(
        f"{base}/v1/documents",
        json={"name": "quillon-warranty.md", "text": XSS_DOC},
        headers={"X-API-Key": admin},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    n = len([x for x in _replies(page) if x["cls"] == "bot"])
    box = page.execute_script(_ROOT + "return r.querySelector('textarea')")
    box.send_keys(XSS_MESSAGE, Keys.ENTER)
    _wait_reply(page, n + 1)
    box.send_keys("How long does the Quillon teapot warranty last?", Keys.ENTER)
    reply = _wait_reply(page, n + 2)
    time.sleep(0.3)  # an onerror handler would have fired by now
    shown = [x["text"] for x in _replies(page)]
    assert XSS_MESSAGE in shown  # the user's markup is shown as text
    assert "seven years" in reply["text"], reply
    # the document's markup reached the widget and was shown literally
    assert "<script>" in reply["text"] or "onerror" in reply["text"], reply
    assert _injected(page) == {"xss": None, "bad": 0, "pageBad": 0}
    # and after a reload, when the transcript is rebuilt from the server
    page.refresh()
    _wait(
        page, _ROOT + "return r.querySelectorAll('ol > li.bot').length >= arguments[0]", 30, n + 2
    )
    time.sleep(0.3)
    assert _injected(page) == {"xss": None, "bad": 0, "pageBad": 0}


# -- handoff: the widget polls for the agent's messages while a person has the conversation ----
def _note_count(page: Any, text: str) -> int:
    return page.execute_script(
        _ROOT + "return [...r.querySelectorAll('li.note')].filter(n =>"
        " n.textContent.includes(arguments[0])).length",
        text,
    )


def test_handoff_shows_agent_messages_until_closed(page, live_server):
    base, _, _, agent = live_server
    a = {"X-API-Key": agent}
    n = len([x for x in _replies(page) if x["cls"] == "bot"])
    box = page.execute_script(_ROOT + "return r.querySelector('textarea')")
    box.send_keys("I want to talk to a person", Keys.ENTER)
    _wait_reply(page, n + 1)
    _wait(page, _ROOT + "return [...r.querySelectorAll('li.note')].length >= 2")
    assert _note_count(page, "connected to a person") == 1
    demo_key = page.execute_script("return document.querySelector('script[data-key]').dataset.key")
    state = httpx.get(
        f"{base}/v1/sessions/{_storage_session(page)}", headers={"X-API-Key": demo_key}
    ).json()["handoff"]
    tid = state["ticket"]
    assert httpx.post(
        f"{base}/v1/tickets/{tid}/claim", json={"agent": "Dana"}, headers=a
    ).is_success
    r = httpx.post(
        f"{base}/v1/tickets/{tid}/reply",
        json={"agent": "Dana", "text": "Hi, I'm Dana <b>from</b> Juniper Home."},
        headers=a,
    )
    assert r.is_success, r.text
    # the widget polls every 3 s
    _wait(
        page,
        _ROOT + "return [...r.querySelectorAll('li.agent')].some(li =>"
        " li.textContent.includes('Hi, I\\'m Dana <b>from</b> Juniper Home.'))",
        15,
    )
    assert httpx.post(
        f"{base}/v1/tickets/{tid}/close", json={"agent": "Dana"}, headers=a
    ).is_success
    _wait(page, _ROOT + "return r.textContent.includes('back with the assistant')", 15)
    assert _injected(page) == {"xss": None, "bad": 0, "pageBad": 0}


# -- (d) Escape closes the panel and gives focus back to the bubble ----------------------------
def test_escape_closes_and_returns_focus(page):
    if page.execute_script(_ROOT + "return r.querySelector('.panel').hidden"):
        page.execute_script(_ROOT + "r.querySelector('.bubble').focus()")
        _keys(page, Keys.ENTER)
    page.execute_script(_ROOT + "r.querySelector('textarea').focus()")
    assert _active(page) == "widget:textarea"
    _keys(page, Keys.ESCAPE)
    assert page.execute_script(_ROOT + "return r.querySelector('.panel').hidden") is True
    assert _active(page) == "widget:bubble"
    assert (
        page.execute_script(
            _ROOT + "return r.querySelector('.bubble').getAttribute('aria-expanded')"
        )
        == "false"
    )


def test_errors_show_one_friendly_line(page, live_server):
    """A revoked/wrong key is a 401: the panel says so in one line and nothing is added."""
    base = live_server[0]
    page.execute_script(
        "const s = document.createElement('script');"
        "s.src = arguments[0] + '/widget.js'; s.dataset.key = 'llmos_wk_nope_000000000000';"
        "s.dataset.title = 'Second'; document.body.appendChild(s);",
        base,
    )
    _wait(page, "return document.querySelectorAll('llmos-widget').length === 2")
    out = page.execute_script(
        "const r = document.querySelectorAll('llmos-widget')[1].shadowRoot;"
        "r.querySelector('.bubble').click();"
        "const t = r.querySelector('textarea'); t.value = 'hello';"
        "t.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));"
        "return true"
    )
    assert out
    status = _wait(
        page,
        "return document.querySelectorAll('llmos-widget')[1].shadowRoot"
        ".querySelector('.status').textContent",
    )
    assert status == "This chat isn't available on this site right now."
    assert "\n" not in status
    logs = json.dumps(page.execute_script("return window.__xss === undefined"))
    assert logs == "true"


# -- Delete: asks once more, then the conversation is gone from the server and the page ------
def test_delete_button_removes_the_conversation(page, live_server):
    base = live_server[0]
    demo_key = page.execute_script("return document.querySelector('script[data-key]').dataset.key")
    session = _storage_session(page)
    assert session
    if page.execute_script(_ROOT + "return r.querySelector('.panel').hidden"):
        page.execute_script(_ROOT + "r.querySelector('.bubble').click()")
    delete = page.execute_script(_ROOT + "return r.querySelector('.del')")
    assert delete.get_attribute("aria-label") == "Delete this conversation"
    delete.send_keys(Keys.ENTER)  # the first press only asks
    assert delete.text == "Sure?"
    status = page.execute_script(_ROOT + "return r.querySelector('.status').textContent")
    assert status == "Press \u201cSure?\u201d to delete this conversation for good."
    r = httpx.get(f"{base}/v1/sessions/{session}", headers={"X-API-Key": demo_key})
    assert r.status_code == 200  # nothing deleted yet
    delete.send_keys(Keys.ENTER)
    _wait(page, _ROOT + "return r.textContent.includes('Conversation deleted.')")
    assert _storage_session(page) is None
    assert [x["cls"] for x in _replies(page)] == ["note", "note"]  # only the notes remain
    assert page.execute_script(_ROOT + "return r.querySelector('.del').hidden") is True
    r = httpx.get(f"{base}/v1/sessions/{session}", headers={"X-API-Key": demo_key})
    assert r.status_code == 404
    # the next message starts a new conversation, and Delete comes back
    box = page.execute_script(_ROOT + "return r.querySelector('textarea')")
    box.send_keys("What are your opening hours?", Keys.ENTER)
    _wait_reply(page, 1)
    assert _storage_session(page) not in (None, session)
    assert page.execute_script(_ROOT + "return r.querySelector('.del').hidden") is False
