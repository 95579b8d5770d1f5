"""Watching a worker from outside its namespace: its UI WebSocket ``/ui_ws`` (the events the
page shows), ``/health`` and ``/api/tree``, over sockets opened inside the host namespace (the
UI listens on loopback there).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import websockets

from lab.netns import connect_in
from lab.services import UI_PORT, UI_TOKEN, http_get

Event = dict[str, Any]
Match = Callable[[Event], bool]

# The UI events that say where a worker stands (the rest are chat, echoes, tree events...).
STATE_EVENTS = ("p2p_status_update", "quic_status_update", "stun_update", "rendezvous_status",
                "error")


class Page:
    """One UI WebSocket, as the browser page holds it: commands out, events in, all kept."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[Event] = []

    async def send(self, **command: Any) -> None:
        await self.ws.send(json.dumps(command))

    async def expect(self, match: Match, timeout: float, what: str) -> Event:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                break
            self.seen.append(event)
            if match(event):
                return event
        recent = [describe(e) for e in self.seen[-8:]]
        raise TimeoutError(f"no {what} within {timeout:.0f} s; last events: {recent}")


@asynccontextmanager
async def page(ns: str) -> AsyncIterator[Page]:
    sock = await asyncio.to_thread(connect_in, ns, "127.0.0.1", UI_PORT)
    async with websockets.connect(f"ws://127.0.0.1:{UI_PORT}/ui_ws?token={UI_TOKEN}", sock=sock,
                                  max_size=2**20, open_timeout=10) as ws:
        yield Page(ws)


def kind(t: str, **fields: Any) -> Match:
    return lambda e: e.get("type") == t and all(e.get(k) == v for k, v in fields.items())


def tunnel_up(e: Event) -> bool:
    return e.get("type") == "quic_status_update" and e.get("state") == "up"


def punch_failed(e: Event) -> bool:
    return e.get("type") == "p2p_status_update" and "failed" in str(e.get("message", ""))


def describe(e: Event) -> str:
    """One line for a state event."""
    t = e.get("type")
    if t == "quic_status_update":
        return f"quic {e.get('state')} {e.get('message') or ''}".strip()
    if t == "stun_update":
        return f"stun {e.get('public_ip')}:{e.get('public_port')} nat_type={e.get('nat_type')!r}"
    if t == "rendezvous_status":
        return f"rendezvous {e.get('state')}: {e.get('message')}"
    return f"{t}: {e.get('message', e.get('content', ''))}"


def snapshot(ns: str) -> dict[str, Any]:
    """``/health`` and the states of ``/api/tree``."""
    health = http_get(ns, "127.0.0.1", UI_PORT, "/health")
    tree = http_get(ns, "127.0.0.1", UI_PORT, f"/api/tree?token={UI_TOKEN}")
    states = {n["path"].rsplit("/", 1)[-1]: n["state"] for n in tree} if isinstance(tree, list) \
        else tree
    return {"health": health.get("status"), "actors": states}


class Recorder:
    """Every UI event of one worker from the moment it is started, on a thread of its own, so
    a test can ask later for an event that came (a failure is not replayed to a new page)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.events: list[tuple[float, Event]] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.record(),),
                                       name=f"recorder-{ns}", daemon=True)
        self.thread.start()
        self.ready.wait(15)

    async def record(self) -> None:
        try:
            async with page(self.ns) as p:
                await p.send(type="ui_client_hello")
                self.ready.set()
                async for text in p.ws:
                    self.events.append((time.monotonic(), json.loads(text)))
        except asyncio.CancelledError:  # close()
            pass
        except Exception as exc:  # the worker went away: kept for the test's message
            self.error = exc
        finally:
            self.ready.set()

    def find(self, match: Match) -> tuple[float, Event] | None:
        return next(((t, e) for t, e in list(self.events) if match(e)), None)

    def wait(self, match: Match, timeout: float, what: str) -> tuple[float, Event]:
        deadline = time.monotonic() + timeout
        while (found := self.find(match)) is None:
            if time.monotonic() > deadline:
                recent = [describe(e) for _, e in self.events[-8:]]
                raise TimeoutError(f"{self.ns}: no {what} within {timeout:.0f} s; last: {recent}"
                                   f"{'; ' + repr(self.error) if self.error else ''}")
            time.sleep(0.05)
        return found

    def close(self) -> None:
        if self.loop.is_running():
            for task in asyncio.all_tasks(self.loop):
                self.loop.call_soon_threadsafe(task.cancel)
        self.thread.join(5)
