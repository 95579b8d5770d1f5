"""The worker page in a real browser: Debian's Chromium driven by Playwright (no browser
download), against `python supervisor.py demo` (a rendezvous service and two workers).

Screenshots of each state go to the test's directory; with UPDATE_SCREENSHOTS=1 the 1280x800 one
also replaces docs/screenshots/worker-page.png, the README's."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_worker_e2e import Demo
from tests.support.processes import ROOT, within

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")]
expect = playwright_sync.expect
WAIT = within(30) * 1000  # ms, for Playwright


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("page-demo"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def pages(demo: Demo, browser: object) -> Iterator[dict[str, object]]:
    opened: dict[str, object] = {}
    errors: list[str] = []
    for name in ("alice", "bob"):
        page = browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(demo.ui[name] + f"/?token={demo.tokens[name]}")  # as the demo printed it
        opened[name] = page
    for page in opened.values():
        expect(page.locator("#badgeQuic")).to_have_text(re.compile("QUIC: up"), timeout=WAIT * 2)
        expect(page.locator("#badgeUdp")).to_have_text(re.compile("connected"), timeout=WAIT)
    yield opened
    for page in opened.values():
        page.close()
    assert not errors, errors


def shot(page: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def no_horizontal_overflow(page: object) -> None:
    width = page.evaluate(  # type: ignore[attr-defined]
        "[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"


def test_status_badges_favicon_and_no_requests_outside(demo: Demo, pages: dict[str, object],
                                                       tmp_path: Path) -> None:
    alice = pages["alice"]
    expect(alice.locator("#workerId")).to_have_text("alice")  # type: ignore[attr-defined]
    expect(alice.locator("#badgeBackend")).to_have_text("page: connected")  # type: ignore[attr-defined]
    expect(alice.locator("#badgeRendezvous")).not_to_have_text(  # type: ignore[attr-defined]
        "rendezvous: unknown", timeout=WAIT)
    expect(alice.locator("#badgeNat")).to_have_text(re.compile("public 127.0.0.1:"),  # type: ignore[attr-defined]
                                                    timeout=WAIT)
    expect(alice.locator("#peerName")).to_have_text("bob")  # type: ignore[attr-defined]
    icon = alice.request.get(demo.ui["alice"] + "/favicon.ico")  # type: ignore[attr-defined]
    assert icon.status == 200
    path = shot(alice, tmp_path, "connected")
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / "screenshots" / "worker-page.png")


@pytest.mark.parametrize(("button", "key", "transport"), [
    ("#sendUdp", "Enter", "UDP"), ("#sendQuic", "Control+Enter", "QUIC")])
def test_chat_typed_in_one_page_appears_in_the_other_with_a_delivered_mark(
        pages: dict[str, object], tmp_path: Path, button: str, key: str, transport: str) -> None:
    alice, bob = pages["alice"], pages["bob"]
    for how in ("click", "key"):
        text = f"hello over {transport} by {how} \u05e9\u05dc\u05d5\u05dd"
        alice.fill("#messageInput", text)  # type: ignore[attr-defined]
        if how == "click":
            alice.click(button)  # type: ignore[attr-defined]
        else:
            alice.press("#messageInput", key)  # type: ignore[attr-defined]
        mine = alice.locator(".message.out", has_text=text)  # type: ignore[attr-defined]
        expect(mine).to_have_attribute("data-transport", transport.lower())
        expect(mine).to_have_attribute("data-state", "delivered", timeout=WAIT)
        expect(mine.locator(".mark")).to_have_text(re.compile("delivered"))
        theirs = bob.locator(".message.in", has_text=text)  # type: ignore[attr-defined]
        expect(theirs).to_be_visible(timeout=WAIT)
        expect(theirs.locator(".text")).to_have_attribute("dir", "auto")
    shot(alice, tmp_path, f"chat-{transport.lower()}-alice")
    shot(bob, tmp_path, f"chat-{transport.lower()}-bob")


def test_limits_are_shown_before_sending(pages: dict[str, object]) -> None:
    alice = pages["alice"]
    alice.fill("#messageInput", "x" * 1300)  # type: ignore[attr-defined]
    expect(alice.locator("#sendUdp")).to_be_disabled()  # type: ignore[attr-defined]
    expect(alice.locator("#sendQuic")).to_be_enabled()  # type: ignore[attr-defined]
    expect(alice.locator("#limits")).to_have_text(re.compile("1300 bytes"))  # type: ignore[attr-defined]
    alice.fill("#messageInput", "")  # type: ignore[attr-defined]


def test_ping_and_echo_show_an_rtt(pages: dict[str, object]) -> None:
    alice = pages["alice"]
    alice.click("#ping")  # type: ignore[attr-defined]
    expect(alice.locator("#pingResult")).to_have_text(re.compile(r"RTT [\d.]+ ms"), timeout=WAIT)  # type: ignore[attr-defined]
    alice.fill("#echoInput", "echo me")  # type: ignore[attr-defined]
    alice.click("#echo")  # type: ignore[attr-defined]
    expect(alice.locator("#echoResult")).to_have_text(re.compile(r"RTT [\d.]+ ms"), timeout=WAIT)  # type: ignore[attr-defined]


def test_a_5000_character_message_leaves_the_layout_intact(pages: dict[str, object],
                                                          tmp_path: Path) -> None:
    alice, bob = pages["alice"], pages["bob"]
    text = "W" * 5000
    alice.fill("#messageInput", text)  # type: ignore[attr-defined]
    alice.click("#sendQuic")  # type: ignore[attr-defined]
    expect(bob.locator(".message.in", has_text="WWWW")).to_be_visible(timeout=WAIT)  # type: ignore[attr-defined]
    for page in (alice, bob):
        no_horizontal_overflow(page)
        expect(page.locator("#sendQuic")).to_be_in_viewport()  # type: ignore[attr-defined]
        expect(page.locator("#echo")).to_be_in_viewport()  # type: ignore[attr-defined]
    bob.set_viewport_size({"width": 400, "height": 800})  # type: ignore[attr-defined]
    no_horizontal_overflow(bob)
    shot(bob, tmp_path, "narrow-400")
    bob.set_viewport_size({"width": 1280, "height": 800})  # type: ignore[attr-defined]


def test_restart_of_quic_from_the_tree_then_quic_chat_works_again(pages: dict[str, object],
                                                                  tmp_path: Path) -> None:
    alice, bob = pages["alice"], pages["bob"]
    row = alice.locator('#treeBody tr[data-path="demo/alice/quic"]')  # type: ignore[attr-defined]
    expect(row.locator(".state")).to_have_text("running", timeout=WAIT)
    restarts = int(row.locator(".restarts").inner_text())
    row.locator("button").click()
    expect(alice.locator("#activity")).to_contain_text(  # type: ignore[attr-defined]
        "restart demo/alice/quic: restarting", timeout=WAIT)
    expect(alice.locator("#activity")).to_contain_text(  # type: ignore[attr-defined]
        "restart demo/alice/quic: restarted", timeout=WAIT)
    expect(row.locator(".state")).to_have_text("running", timeout=WAIT)
    expect(row.locator(".restarts")).to_have_text(str(restarts + 1), timeout=WAIT)
    expect(alice.locator("#treeEvents")).to_contain_text("demo/alice/quic")  # type: ignore[attr-defined]
    text = "after the quic restart"
    alice.fill("#messageInput", text)  # type: ignore[attr-defined]
    alice.click("#sendQuic")  # type: ignore[attr-defined]
    expect(alice.locator(".message.out", has_text=text)).to_have_attribute(  # type: ignore[attr-defined]
        "data-state", "delivered", timeout=WAIT)
    expect(bob.locator(".message.in", has_text=text)).to_be_visible(timeout=WAIT)  # type: ignore[attr-defined]
    shot(alice, tmp_path, "after-quic-restart")


def test_restart_worker_reconnects_and_replays_history(pages: dict[str, object],
                                                       tmp_path: Path) -> None:
    alice = pages["alice"]
    before = alice.locator("#chatbox .message").count()  # type: ignore[attr-defined]
    assert before > 0
    alice.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    alice.locator('#treeBody tr[data-path="demo/alice"] button').click()  # type: ignore[attr-defined]
    expect(alice.locator("#banner")).to_be_visible(timeout=WAIT)  # type: ignore[attr-defined]
    shot(alice, tmp_path, "reconnecting")
    expect(alice.locator("#banner")).to_be_hidden(timeout=WAIT)  # type: ignore[attr-defined]
    expect(alice.locator("#chatbox .message")).to_have_count(before, timeout=WAIT)  # type: ignore[attr-defined]
    expect(alice.locator("#treeEvents")).to_contain_text("demo/alice/ui")  # type: ignore[attr-defined]
    alice.reload()  # type: ignore[attr-defined]
    expect(alice.locator("#chatbox .message")).to_have_count(before, timeout=WAIT)  # type: ignore[attr-defined]
    expect(alice.locator("#badgeQuic")).to_have_text(re.compile("QUIC: up"), timeout=WAIT)  # type: ignore[attr-defined]
    shot(alice, tmp_path, "after-worker-restart")


def test_a_benchmark_run_reaches_100_percent_on_both_pages(demo: Demo, pages: dict[str, object],
                                                           tmp_path: Path) -> None:
    alice, bob = pages["alice"], pages["bob"]
    tree = alice.request.get(demo.ui["alice"] + "/api/tree").json()  # type: ignore[attr-defined]
    if not any(node["path"].endswith("/benchmark") for node in tree):
        pytest.skip("needs the benchmark actor")
    alice.fill("#benchValue", "2")  # type: ignore[attr-defined]
    alice.click("#benchStart")  # type: ignore[attr-defined]
    for page in (alice, bob):
        expect(page.locator("#benchResult")).to_be_visible(timeout=WAIT * 2)
        expect(page.locator("#benchProgress")).to_have_attribute("value", "100")
        expect(page.locator("#benchResult")).to_contain_text("goodput")
    shot(alice, tmp_path, "benchmark-alice")
    shot(bob, tmp_path, "benchmark-bob")
