"""The worker UI against other web pages: the real ui actor (tests/support/ui_tree.py) behind
uvicorn, and Debian's Chromium driven by Playwright. A page from another origin cannot open
``/ui_ws`` (even with the UI's cookie in the browser), the page and the API need the token,
and the page itself still works under its Content-Security-Policy."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.test_worker_ui import UiTree, ui  # noqa: F401 - the fixture
from tests.support.processes import wait_until, within
from tests.support.ui_tree import UI_TOKEN

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"

EVIL_PAGE = """<!doctype html><script>
window.results = [];
for (const query of ["", "?token=wrong", "?token=%(token)s"]) {
  const ws = new WebSocket("ws://127.0.0.1:%(port)d/ui_ws" + query);
  ws.onopen = () => { window.results.push("open" + query);
                      ws.send(JSON.stringify({type: "send_quic_message", content: "pwned"})); };
  ws.onclose = () => window.results.push("closed" + query);
}
</script>"""


class EvilSite:
    """Another origin (another port) serving a page that tries to drive the worker."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def quic_chats(ui: UiTree) -> list[dict[str, Any]]:  # noqa: F811
    return [r for r in ui.records("quic") if r["message"] == "ChatSend"]


def test_another_origin_cannot_drive_the_worker(ui: UiTree, browser: Any) -> None:  # noqa: F811
    evil = EvilSite(EVIL_PAGE % {"port": ui.port, "token": UI_TOKEN})
    try:
        context = browser.new_context()
        page = context.new_page()
        # The user opened the real UI first: its token cookie is in the browser (and sent to
        # 127.0.0.1 whatever the port: same site), so only the Origin check stands in the way.
        with page.expect_websocket(timeout=within(10) * 1000):  # the page's own /ui_ws
            page.goto(f"http://127.0.0.1:{ui.port}/?token={UI_TOKEN}")
        assert any(c["name"] == f"ui_token_{ui.port}" for c in context.cookies())
        attacker = context.new_page()
        attacker.goto(evil.url)
        wait_until(lambda: attacker.evaluate("window.results.length") == 3, 10,
                   "the attacker's three sockets to end")
        results = attacker.evaluate("window.results")
        assert sorted(results) == ["closed", "closed?token=" + UI_TOKEN, "closed?token=wrong"]
        # The real page works: its script runs under the CSP and its socket carries the cookie.
        page.evaluate("""() => { const ws = new WebSocket(`ws://${location.host}/ui_ws`);
            ws.onopen = () => ws.send(JSON.stringify({type: "send_quic_message",
                                                      content: "from the page"})); }""")
        wait_until(lambda: quic_chats(ui), 10, "the page's chat")
        assert [r["text"] for r in quic_chats(ui)] == ["from the page"]
        context.close()
    finally:
        evil.close()


def test_the_page_cannot_be_framed_by_another_page(ui: UiTree, browser: Any) -> None:  # noqa: F811
    framing = EvilSite(f'<!doctype html><iframe id="f" src="http://127.0.0.1:{ui.port}/'
                       f'?token={UI_TOKEN}"></iframe>')
    try:
        page = browser.new_page()
        page.goto(framing.url)
        page.wait_for_load_state("load")
        # Blocked by frame-ancestors 'none': the frame never shows the UI's page.
        frame = next(f for f in page.frames if f is not page.main_frame)
        assert "/ui_ws" not in frame.content()
        page.close()
    finally:
        framing.close()


def test_the_page_the_api_and_the_socket_need_the_token(ui: UiTree) -> None:  # noqa: F811
    bare = httpx.Client(base_url=f"http://127.0.0.1:{ui.port}", timeout=within(5))
    try:
        assert bare.get("/").status_code == 401
        assert bare.get("/api/tree").status_code == 401
        assert bare.get("/health").status_code == 200
        page = bare.get(f"/?token={UI_TOKEN}")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert bare.get("/api/tree").status_code == 200  # the cookie the page set
    finally:
        bare.close()
    refused = [{"token": None}, {"token": "wrong-token-0123456789"},
               {"additional_headers": {"Origin": "http://evil.example"}}]
    for options in refused:
        with pytest.raises(InvalidStatus):
            ui.ws(**options).__enter__()
    with ui.ws(additional_headers={"Origin": f"http://127.0.0.1:{ui.port}"}) as ws:
        assert ws.recv(within(5))


def test_restart_stays_inside_the_worker_tree(ui: UiTree) -> None:  # noqa: F811
    import json

    with ui.ws() as ws:
        ws.recv(within(5))
        ws.send(json.dumps({"type": "restart_worker_request", "path": "demo/rendezvous"}))
        while (reply := json.loads(ws.recv(within(5))))["type"] != "error":
            pass
        assert "not in this worker's tree" in reply["message"]
