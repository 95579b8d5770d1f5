"""The ui actor in a real worker-shaped tree (tests/support/ui_tree.py): uvicorn on the socket the
supervisor bound, a real websockets client and httpx, recorder stand-ins for its siblings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from actors.client import Client
from actors.worker.ui_app import CLIENT_QUEUE, COMMAND_FIELDS, MAX_UI_FRAME, parse_command
from messages.errors import DecodeError
from messages.runtime import StopChild
from messages.worker import PathStatus, StatusRequest, StunResult, TunnelStatus, UiEvent
from tests.support.processes import ROOT, RunningTree, stop_tree, wait_until, within
from tests.support.ui_tree import UI_TOKEN, WORKER_ID, read_records


class UiTree:
    def __init__(self, tree: RunningTree, port: int) -> None:
        self.tree, self.port = tree, port
        self.workdir = str(tree.workdir)
        self.client = Client(tree.rundir)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=within(5),
                                 headers={"Authorization": f"Bearer {UI_TOKEN}"})

    def ws(self, token: str | None = UI_TOKEN, **kw: Any) -> ClientConnection:
        query = f"?token={token}" if token else ""
        return connect(f"ws://127.0.0.1:{self.port}/ui_ws{query}", open_timeout=within(5), **kw)

    def records(self, name: str) -> list[dict[str, Any]]:
        """What sibling ``name`` received; a chat's ref (named by the ui actor) checked, then
        left out."""
        records = read_records(self.workdir, name)
        for record in records:
            if record["message"] == "ChatSend":
                assert isinstance(record.pop("ref"), str)
        return records

    def wait_record(self, name: str, count: int) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.records(name)) >= count, 5, f"{count} records from {name}")
        return self.records(name)

    def ui_pid(self) -> int:
        return self.client.node("worker", "worker/ui")["pid"]


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[UiTree]:
    log = tmp_path / "tree.log"
    script = ROOT / "tests" / "support" / "ui_tree.py"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)  # noqa: SIM115
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()  # bounded by the tree's own start timeouts
    tree = RunningTree(proc, tmp_path, log)
    if ready[:1] != ["READY"]:
        stop_tree(tree)
        raise AssertionError(f"ui tree did not start: {log.read_text()[-2000:]}")
    running = UiTree(tree, int(ready[1]))
    yield running
    running.http.close()
    running.client.close()
    stop_tree(tree)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=20)
NEAR_COMMANDS = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(COMMAND_FIELDS)) | st.text()},
    optional={"content": JSON, "payload": JSON, "path": JSON}).map(json.dumps)


@given(st.text(max_size=200) | JSON.map(json.dumps) | NEAR_COMMANDS)
def test_parse_command_gives_a_command_or_a_decode_error(text: str) -> None:
    try:
        command = parse_command(text)
    except DecodeError:
        return
    assert command["type"] in COMMAND_FIELDS
    assert all(isinstance(command[name], str) and command[name]
               for name in COMMAND_FIELDS[command["type"]])


@pytest.mark.parametrize("text", [
    "[" * 30_000, '{"a":' * 20_000, "x" * 70_000,
    '{"type": "send_p2p_message", "content": "\\ud800"}',  # JSON escape of a lone surrogate
    '{"type": "restart_worker_request", "path": "\\udfff"}'])
def test_parse_command_refuses_hostile_frames(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_command(text)


def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=within(timeout)))


def receive_type(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of type ``kind``, skipping others (tree events, statuses)."""
    deadline = time.monotonic() + within(timeout)
    while (left := deadline - time.monotonic()) > 0:
        message = json.loads(ws.recv(timeout=left))
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} within {timeout} s")


def receive_each(ws: ClientConnection,
                 wanted: dict[str, Callable[[dict[str, Any]], bool]]) -> dict[str, dict[str, Any]]:
    """Read until, for each type in ``wanted``, a message of that type matched; in any order."""
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < len(wanted):
        message = receive(ws, 10)
        kind = message["type"]
        if kind in wanted and kind not in seen and wanted[kind](message):
            seen[kind] = message
    return seen


def test_health_and_page(ui: UiTree) -> None:
    health = ui.http.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "worker_id": WORKER_ID}
    page = ui.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="viewport"' in page.text and '<script src="/app.js"' in page.text
    assert "<script>" not in page.text and "onclick" not in page.text  # CSP-ready: no inline
    script = ui.http.get("/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/ui_ws" in script.text
    assert ui.http.get("/app.css").headers["content-type"].startswith("text/css")
    icon = ui.http.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert ui.http.post("/health").status_code == 405
    assert ui.http.get("/nowhere").status_code == 404


def test_api_tree_lists_the_worker_tree(ui: UiTree) -> None:
    nodes = ui.http.get("/api/tree").json()
    by_path = {node["path"]: node for node in nodes}
    assert list(by_path) == ["worker", "worker/udp", "worker/stun", "worker/quic", "worker/ui"]
    for node in nodes:
        assert {"path", "pid", "state", "restarts", "uptime", "last_exit"} <= set(node)
        assert node["state"] == "running" and node["pid"] > 0
    assert by_path["worker/ui"]["pid"] == ui.ui_pid()


def test_init_info_on_connect_then_hello_gives_the_known_status(ui: UiTree) -> None:
    with ui.ws() as ws:
        assert receive(ws) == {"type": "init_info", "worker_id": WORKER_ID, "p2p_peer_id": None}
    ui.client.tell("worker/ui", PathStatus("connected", "peer-abcdef123", "127.0.0.1", 9, 0.01, ""))
    ui.client.tell("worker/ui", TunnelStatus("up", "peer-abcdef123", "authenticated"))
    ui.client.tell("worker/ui", StunResult(True, "203.0.113.7", 40000, "Full Cone", ""))
    status = ui.client.ask("worker/ui", StatusRequest())  # the tells above are handled
    del status["clients"]  # the first session may not be gone yet: that is another test's
    assert status == {"worker_id": WORKER_ID, "port": ui.port, "p2p_peer_id": "peer-abcdef123",
                      "path_state": "connected", "tunnel_state": "up",
                      "public_endpoint": "203.0.113.7:40000"}
    with ui.ws() as ws:
        assert receive(ws)["p2p_peer_id"] == "peer-abcdef123"
        ws.send(json.dumps({"type": "ui_client_hello"}))
        assert [receive(ws) for _ in range(3)] == [
            {"type": "p2p_status_update", "peer_id": "peer-abcdef123",
             "message": "P2P link active with peer-abc..."},
            {"type": "quic_status_update", "state": "up", "peer_id": "peer-abcdef123",
             "message": "authenticated"},
            {"type": "stun_update", "public_ip": "203.0.113.7", "public_port": 40000,
             "nat_type": "Full Cone"},
        ]


def test_each_command_reaches_its_sibling(ui: UiTree) -> None:
    with ui.ws() as ws:
        receive(ws)
        for command in ({"type": "send_p2p_message", "content": "over udp"},
                        {"type": "send_quic_message", "content": "over quic"},
                        {"type": "p2p_ping_command"},
                        {"type": "quic_echo_command", "payload": "echo me"},
                        {"type": "redo_stun_request"}):
            ws.send(json.dumps(command))
    assert ui.wait_record("udp", 2) == [{"message": "ChatSend", "text": "over udp"},
                                        {"message": "PingPeer"}]
    assert ui.wait_record("quic", 2) == [{"message": "ChatSend", "text": "over quic"},
                                         {"message": "EchoPeer", "payload": "echo me"}]
    assert ui.wait_record("stun", 1) == [{"message": "RedoStun"}]


def test_ui_events_are_broadcast_to_every_client(ui: UiTree) -> None:
    with ui.ws() as first, ui.ws() as second:
        receive(first), receive(second)
        wait_until(lambda: ui.client.ask("worker/ui", StatusRequest())["clients"] == 2, 5,
                   "both clients registered")
        chat = {"type": "p2p_message_received", "from_peer_id": "peer-1", "content": "hello"}
        echo = {"type": "quic_echo_response", "payload": "x", "rtt_ms": 1.5}
        ui.client.tell("worker/ui", UiEvent(chat))
        ui.client.tell("worker/ui", UiEvent(echo))
        for ws in (first, second):
            assert receive_type(ws, "p2p_message_received") == chat
            assert receive_type(ws, "quic_echo_response") == echo


@pytest.mark.parametrize("frame, complaint", [
    ("not json", "must be JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "launch_rockets"}', "unknown command type"),
    ('{"content": "no type"}', "unknown command type"),
    ('{"type": "send_p2p_message"}', "'content'"),
    ('{"type": "send_p2p_message", "content": ""}', "'content'"),
    ('{"type": "quic_echo_command", "payload": 7}', "'payload'"),
    ('{"type": "restart_worker_request", "path": 7}', "'path' must be a string"),
    ('{"type": "start_benchmark_send", "mode": "tcp"}', "'mode' is one of"),
    (json.dumps({"type": "send_p2p_message", "content": "x" * MAX_UI_FRAME}), "at most"),
    (b"\x00binary", "JSON text frames"),
])
def test_bad_input_is_an_error_and_the_socket_stays_open(ui: UiTree, frame: str | bytes,
                                                        complaint: str) -> None:
    with ui.ws() as ws:
        receive(ws)
        ws.send(frame)
        answer = receive(ws)
        assert answer["type"] == "error" and complaint in answer["message"]
        ws.send(json.dumps({"type": "send_p2p_message", "content": "still here"}))
    assert ui.wait_record("udp", 1) == [{"message": "ChatSend", "text": "still here"}]


def test_a_bad_ui_event_is_refused_and_the_actor_carries_on(ui: UiTree) -> None:
    pid = ui.ui_pid()
    ui.client.tell("worker/ui", UiEvent({"type": "x", "raw": b"\x00"}))  # bytes: no JSON form
    ui.client.tell("worker/ui", UiEvent({"no_type": 1}))
    assert ui.client.ask("worker/ui", StatusRequest())["worker_id"] == WORKER_ID
    node = ui.client.node("worker", "worker/ui")
    assert node["malformed"] == 2 and node["pid"] == pid


def test_restart_request_restarts_one_child_and_tree_events_follow(ui: UiTree) -> None:
    old = ui.client.node("worker", "worker/quic")["pid"]
    with ui.ws() as ws:
        receive(ws)
        ws.send(json.dumps({"type": "restart_worker_request", "path": "quic"}))
        assert receive_type(ws, "restart_status") == {
            "type": "restart_status", "path": "worker/quic", "status": "restarting",
            "reason": ""}
        # The answer and the tree events come by different ways: in either order.
        seen = receive_each(ws, {
            "restart_status": lambda m: True,
            "tree_event": lambda m: m["kind"] == "restarted" and m["path"] == "worker/quic"})
        assert seen["restart_status"]["status"] == "restarted"
        assert seen["tree_event"]["pid"] != old
        assert seen["tree_event"]["reason"] == "restart requested"
        ws.send(json.dumps({"type": "restart_worker_request", "path": "nothing"}))
        # Refused before anything is said to be restarting, with the reason.
        assert receive_type(ws, "restart_status") == {
            "type": "restart_status", "path": "worker/nothing", "status": "refused",
            "reason": "worker/nothing is not in this worker's tree"}
        assert "not in this worker's tree" in receive_type(ws, "error")["message"]
    assert ui.client.node("worker", "worker/quic")["pid"] != old


def test_restart_everything_restarts_every_child_and_the_ui_last(ui: UiTree) -> None:
    before = {n["path"]: n["pid"] for n in ui.client.tree("worker")}
    with ui.ws() as ws:
        receive(ws)
        ws.send(json.dumps({"type": "restart_worker_request"}))
        done = [receive_type(ws, "restart_status") for _ in range(7)]
    assert [(s["path"], s["status"]) for s in done] == [
        ("worker/udp", "restarting"), ("worker/udp", "restarted"),
        ("worker/stun", "restarting"), ("worker/stun", "restarted"),
        ("worker/quic", "restarting"), ("worker/quic", "restarted"),
        ("worker/ui", "restarting")]
    wait_until(lambda: ui.client.node("worker", "worker/ui")["pid"] not in (0, before["worker/ui"]),
               10, "the ui to restart")
    after = {n["path"]: n["pid"] for n in ui.client.tree("worker")}
    assert all(after[path] != pid for path, pid in before.items() if path != "worker")
    with ui.ws() as ws:
        assert receive(ws)["type"] == "init_info"


def test_kill_9_of_the_ui_keeps_the_port_and_clients_reconnect(ui: UiTree) -> None:
    old = ui.ui_pid()
    ui.client.subscribe("worker")
    with ui.ws() as ws:
        receive(ws)
        os.kill(old, signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=within(5))
    ui.client.wait_event("restarted", "worker/ui", within(10))
    assert ui.ui_pid() != old
    assert ui.http.get("/health").json()["worker_id"] == WORKER_ID
    with ui.ws() as ws:
        assert receive(ws)["type"] == "init_info"
        ws.send(json.dumps({"type": "p2p_ping_command"}))
    assert ui.wait_record("udp", 1) == [{"message": "PingPeer"}]


def test_sigint_does_not_stop_the_server(ui: UiTree) -> None:
    """Ctrl-C is the root's to handle; uvicorn must not have taken SIGINT over in the ui."""
    pid = ui.ui_pid()
    os.kill(pid, signal.SIGINT)
    until = time.monotonic() + 0.5  # uvicorn acts on should_exit within one 0.1 s tick
    while time.monotonic() < until:
        assert ui.http.get("/health").status_code == 200
    assert ui.ui_pid() == pid


def test_graceful_stop_with_a_client_connected_is_normal(ui: UiTree) -> None:
    with ui.ws() as ws:
        receive(ws)
        assert ui.client.ask("worker", StopChild("worker/ui"), within(20)) == "stopped"
    node = ui.client.node("worker", "worker/ui")
    assert node["state"] == "stopped" and node["last_exit"] == "normal"


def raw_slow_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /ui_ws?token=" + UI_TOKEN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Upgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    sock.settimeout(within(5))
    assert b" 101 " in sock.recv(1024)
    return sock


def test_a_slow_client_is_dropped_and_the_others_get_everything(ui: UiTree) -> None:
    count, blob = 4 * CLIENT_QUEUE, "x" * 16_000
    slow = raw_slow_client(ui.port)
    try:
        with ui.ws() as fast:
            receive(fast)
            wait_until(lambda: ui.client.ask("worker/ui", StatusRequest())["clients"] == 2, 5,
                       "both clients registered")
            got: list[int] = []
            for start in range(0, count, CLIENT_QUEUE // 4):  # rounds the fast client keeps up with
                for seq in range(start, start + CLIENT_QUEUE // 4):
                    ui.client.tell("worker/ui", UiEvent({"type": "bulk", "seq": seq, "blob": blob}))
                ui.client.ask("worker/ui", StatusRequest())  # sends what backpressure held back
                got.extend(receive_type(fast, "bulk")["seq"] for _ in range(CLIENT_QUEUE // 4))
            assert got == list(range(count))
            assert ui.client.ask("worker/ui", StatusRequest())["clients"] == 1
    finally:
        slow.close()


def test_history_is_bounded_saved_and_never_moves_back(tmp_path: Path) -> None:
    from actors.worker.ui import CHAT_HISTORY, TREE_HISTORY, History

    history = History(str(tmp_path / "ui.state"))
    for n in range(CHAT_HISTORY + 5):
        history.chat("out", "quic", f"chat {n}", "queued", ref=f"r{n}")
    for n in range(TREE_HISTORY + 5):
        history.tree_event({"type": "tree_event", "kind": "started", "path": f"w/{n}"})
    last = f"r{CHAT_HISTORY + 4}"
    assert history.chat_state({"ref": last, "state": "delivered"})["state"] == "delivered"
    assert history.chat_state({"ref": last, "state": "sent"})["state"] == "delivered"
    assert history.chat_state({"ref": "r0", "state": "sent"}) is None  # rolled out of the ring
    again = History(str(tmp_path / "ui.state")).replay()  # what a restarted ui actor replays
    assert len(again["chats"]) == CHAT_HISTORY and len(again["tree_events"]) == TREE_HISTORY
    assert again["chats"][0]["text"] == "chat 5" and again["chats"][-1]["state"] == "delivered"
    assert again["tree_events"][-1]["path"] == f"w/{TREE_HISTORY + 4}"
