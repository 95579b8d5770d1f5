// The worker page. Every text from the backend or the peer goes in with textContent, never as
// HTML; no inline handlers and no eval, so a strict Content-Security-Policy can hold.
"use strict";

const $ = (id) => document.getElementById(id);
const LIMITS = { udp: 1200, quic: 16384 };  // UTF-8 bytes: protocol/udp, protocol/tunnel/chat
const MAX_LIST = 200;                        // lines kept in the tree-event and activity lists
const MARKS = { queued: "◷ queued", sent: "✓ sent", delivered: "✓✓ delivered", failed: "✗ failed" };
const encoder = new TextEncoder();
let socket = null;
let myWorkerId = "";
let peerId = "";
let retryDelay = 500;
let lastTree = [];
const pendingRestarts = new Map();  // path -> "restarting" until its restart_status result
const refusedRestarts = new Map();  // path -> why the last restart was refused
const shortId = (id) => !id ? "?" : (id.length <= 12 ? id : id.substring(0, 8) + "…");

function setBadge(id, state, text) {
    const badge = $(id);
    badge.dataset.state = state;
    badge.textContent = text;
}

function appendLine(listId, text) {
    const list = $(listId);
    const item = document.createElement("li");
    item.textContent = text;
    list.prepend(item);
    while (list.children.length > MAX_LIST) list.lastChild.remove();
}

const activity = (text) => appendLine("activity", `${new Date().toLocaleTimeString()} ${text}`);

// -- chat --------------------------------------------------------------------------------------
function chatBubble(entry) {
    let div = document.querySelector(`#chatbox [data-ref="${CSS.escape(entry.ref)}"]`);
    const fresh = !div;
    if (fresh) {
        div = document.createElement("div");
        div.dataset.ref = entry.ref;
        const who = document.createElement("bdi");
        who.className = "who";
        const text = document.createElement("div");
        text.className = "text";
        text.dir = "auto";
        const mark = document.createElement("span");
        mark.className = "mark";
        div.append(who, text, mark);
    }
    const out = entry.direction === "out";
    div.className = `message ${out ? "out" : "in"}`;
    div.dataset.state = entry.state;
    div.dataset.transport = entry.transport;
    const transport = entry.transport.toUpperCase();
    div.querySelector(".who").textContent = out ? `me (${transport})`
        : `${shortId(entry.peer)} (${transport})`;
    div.querySelector(".text").textContent = entry.text;
    const mark = div.querySelector(".mark");
    mark.textContent = out ? (MARKS[entry.state] || entry.state) : "";
    mark.title = entry.reason || "";
    if (out && entry.state === "failed" && entry.reason) mark.textContent += `: ${entry.reason}`;
    if (fresh) {
        const box = $("chatbox");
        const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
        box.appendChild(div);
        while (box.children.length > MAX_LIST) box.firstChild.remove();
        if (atBottom || out) box.scrollTop = box.scrollHeight;
    }
}

function systemLine(text) {
    const div = document.createElement("div");
    div.className = "message system";
    div.dir = "auto";
    div.textContent = text;
    $("chatbox").appendChild(div);
    $("chatbox").scrollTop = $("chatbox").scrollHeight;
}

function newRef() {
    const random = crypto.getRandomValues(new Uint32Array(2));
    return `p${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}

function updateLimits() {
    const bytes = encoder.encode($("messageInput").value).length;
    const hint = $("limits");
    hint.classList.toggle("over", bytes > LIMITS.udp);
    $("sendUdp").disabled = bytes > LIMITS.udp;
    $("sendQuic").disabled = bytes > LIMITS.quic;
    $("sendUdp").title = bytes > LIMITS.udp ? `UDP chat is at most ${LIMITS.udp} bytes` : "";
    $("sendQuic").title = bytes > LIMITS.quic ? `QUIC chat is at most ${LIMITS.quic} bytes` : "";
    hint.textContent = `${bytes} bytes · Enter: UDP (at most ${LIMITS.udp} bytes, not resent)`
        + ` · Ctrl+Enter: QUIC (at most ${LIMITS.quic} bytes, delivered once, in order)`;
}

function sendChat(transport) {
    const input = $("messageInput");
    const text = input.value;
    if (!text) return;
    if (encoder.encode(text).length > LIMITS[transport]) {
        return systemLine(`Too long for ${transport.toUpperCase()}: at most ${LIMITS[transport]} bytes.`);
    }
    const ref = newRef();
    const type = transport === "udp" ? "send_p2p_message" : "send_quic_message";
    if (send({ type, content: text, ref })) {
        chatBubble({ ref, direction: "out", transport, text, state: "queued", reason: "", peer: "" });
        input.value = "";
        updateLimits();
    }
}

// -- the socket --------------------------------------------------------------------------------
function send(command) {
    if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(command));
        return true;
    }
    systemLine("Not connected to the local worker: not sent.");
    return false;
}

function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${window.location.host}/ui_ws${window.location.search}`);
    socket.addEventListener("open", () => {
        retryDelay = 500;
        $("banner").hidden = true;
        setBadge("badgeBackend", "ok", "page: connected");
        socket.send(JSON.stringify({ type: "ui_client_hello" }));
        refreshTree();
    });
    socket.addEventListener("message", (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch (e) { return activity("non-JSON from the backend"); }
        const handler = handlers[data.type];
        if (handler) handler(data); else activity(`unhandled ${String(data.type)}`);
    });
    socket.addEventListener("close", () => {
        $("banner").hidden = false;
        setBadge("badgeBackend", "bad", "page: reconnecting");
        setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 4000);
    });
}

const handlers = {
    init_info(data) {
        myWorkerId = data.worker_id;
        $("workerId").textContent = myWorkerId;
        document.title = `P2P Worker: ${myWorkerId}`;
        if (data.p2p_peer_id) setPeer(data.p2p_peer_id);
    },
    history(data) {
        $("chatbox").replaceChildren();
        for (const entry of data.chats || []) chatBubble(entry);
        $("treeEvents").replaceChildren();
        for (const event of data.tree_events || []) handlers.tree_event(event, true);
        if (data.benchmark) showResult(data.benchmark);
    },
    chat(data) { chatBubble(data); },
    chat_state(data) { /* the "chat" that follows it carries the whole entry */ },
    p2p_message_received() { /* shown from its "chat" entry */ },
    quic_message_received() { /* shown from its "chat" entry */ },
    p2p_status_update(data) {
        activity(`P2P: ${data.message}`);
        if (data.peer_id) setPeer(data.peer_id);
    },
    path_status(data) {
        const state = data.state;
        const tone = state === "connected" ? "ok" : (state === "punching" || state === "lost") ? "busy" : "bad";
        let text = `UDP path: ${state}`;
        if (data.peer_id && state !== "closed") text += ` to ${shortId(data.peer_id)} at ${data.host}:${data.port}`;
        if (state === "connected" && data.rtt_ms) text += `, RTT ${data.rtt_ms} ms`;
        if (data.kind) text += ` (${data.kind})`;
        setBadge("badgeUdp", tone, text);
        $("badgeUdp").title = data.reason || "the punched UDP path to the peer";
        if (data.peer_id) setPeer(data.peer_id);
    },
    quic_status_update(data) {
        const tone = data.state === "up" ? "ok" : data.state === "connecting" ? "busy" : "bad";
        let text = `QUIC: ${data.state}`;
        if (data.peer_fingerprint) text += ` (peer ${String(data.peer_fingerprint).substring(0, 16)})`;
        setBadge("badgeQuic", tone, text);
        $("badgeQuic").title = data.message || "the QUIC tunnel over the UDP path";
        activity(`QUIC: ${data.state}${data.message ? ` (${data.message})` : ""}`);
    },
    rendezvous_status(data) {
        const tone = ["connected", "registered", "up"].includes(data.state) ? "ok"
            : ["connecting", "reconnecting", "registering"].includes(data.state) ? "busy" : "bad";
        setBadge("badgeRendezvous", tone, `rendezvous: ${data.state}`);
        $("badgeRendezvous").title = data.message || "";
    },
    stun_update(data) {
        stunPending = false;
        const nat = data.nat_behaviour || data.nat_type || "unknown";
        setBadge("badgeNat", "ok", `NAT: ${nat}, public ${data.public_ip}:${data.public_port}`);
        $("redoStun").disabled = false;
        $("redoStun").textContent = "Redo STUN";
        activity(`STUN: public ${data.public_ip}:${data.public_port} (${nat})`);
    },
    p2p_ping_result(data) {
        $("pingResult").textContent = data.error ? `failed: ${data.error}` : `RTT ${data.rtt_ms} ms`;
    },
    quic_echo_response(data) {
        $("echoResult").textContent = data.error ? `failed: ${data.error}` : `RTT ${data.rtt_ms} ms`;
    },
    restart_status(data) {
        if (data.status === "restarting") {
            pendingRestarts.set(data.path, "restarting");
            refusedRestarts.delete(data.path);
        } else {
            pendingRestarts.delete(data.path);
            if (data.status === "refused") refusedRestarts.set(data.path, data.reason || "refused");
        }
        activity(`restart ${data.path}: ${data.status}${data.reason ? ` (${data.reason})` : ""}`);
        renderTree(lastTree);
        refreshTree();
    },
    tree_event(data, replayed = false) {
        const at = new Date(data.at * 1000).toLocaleTimeString();
        appendLine("treeEvents", `${at} ${data.kind} ${data.path} pid=${data.pid} ${data.reason || ""}`);
        if (!replayed) refreshTree();
    },
    benchmark_progress(data) { showProgress(data); },
    benchmark_result(data) { showResult(data); },
    error(data) {
        if (stunPending) { stunPending = false; $("redoStun").disabled = false; $("redoStun").textContent = "Redo STUN"; }
        if (benchRunning && /bench/i.test(data.message)) benchDone(`failed: ${data.message}`);
        systemLine(`Error: ${data.message}`);
    },
};

function setPeer(id) {
    peerId = id;
    $("peerName").textContent = shortId(id);
    $("peerName").title = id;
}

// -- the tree ----------------------------------------------------------------------------------
let treeTimer = null;
function refreshTree() {  // events come in bursts on a restart: fetch once
    clearTimeout(treeTimer);
    treeTimer = setTimeout(async () => {
        try {
            const response = await fetch(`/api/tree${window.location.search}`);
            if (response.ok) {
                renderTree(await response.json());
                $("treeStatus").textContent = "";
            } else {
                $("treeStatus").textContent = `tree: ${response.status} (the worker is busy)`;
            }
        } catch (e) { $("treeStatus").textContent = "tree: the worker is not answering"; }
    }, 100);
}

function restartRefusal(node, root) {
    if (pendingRestarts.size && (pendingRestarts.has(node.path) || pendingRestarts.has(root)))
        return "a restart is in progress";
    if (node.state !== "running") return `it is ${node.state}`;
    return "";
}

function renderTree(nodes) {
    lastTree = nodes;
    const body = $("treeBody");
    body.replaceChildren();
    if (!nodes.length) return;
    const root = nodes[0].path;  // this worker's supervisor: its button restarts every child
    const baseDepth = root.split("/").length;
    for (const node of nodes) {
        const row = document.createElement("tr");
        row.dataset.path = node.path;
        const depth = node.path.split("/").length - baseDepth;
        const name = document.createElement("td");
        name.className = "node";
        name.style.paddingInlineStart = `${5 + depth * 16}px`;
        const label = document.createElement("bdi");
        label.textContent = depth ? node.path.substring(node.path.lastIndexOf("/") + 1) : node.path;
        label.title = node.path;
        const kind = document.createElement("span");
        kind.className = "kind";
        kind.textContent = node.kind;
        name.append(label, kind);
        const state = document.createElement("td");
        const shown = pendingRestarts.has(node.path) ? "restarting" : node.state;
        const stateText = document.createElement("span");
        stateText.className = "state";
        stateText.dataset.state = shown;
        stateText.textContent = shown;
        state.appendChild(stateText);
        row.append(name, state);
        for (const [text, cls] of [[node.pid || "–", "pid"], [formatUptime(node.uptime), "uptime"],
                                   [node.restarts, "restarts"], [node.last_exit || "–", "exit"]]) {
            const td = document.createElement("td");
            td.className = cls;
            td.textContent = String(text);
            row.appendChild(td);
        }
        const action = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "small" + (depth ? "" : " danger");
        button.textContent = depth ? "restart" : "restart worker";
        const why = restartRefusal(node, root);
        button.disabled = Boolean(why);
        button.title = why ? `cannot restart now: ${why}` : (depth ? `restart ${node.path}`
            : "restart every actor of this worker");
        button.addEventListener("click", () => requestRestart(node.path, depth === 0));
        action.appendChild(button);
        if (refusedRestarts.has(node.path)) {
            const note = document.createElement("span");
            note.className = "why";
            note.textContent = `refused: ${refusedRestarts.get(node.path)}`;
            action.appendChild(note);
        }
        row.appendChild(action);
        body.appendChild(row);
    }
}

function requestRestart(path, whole) {
    if (whole && !window.confirm("Restart every actor of this worker?")) return;
    send(whole ? { type: "restart_worker_request" } : { type: "restart_worker_request", path });
}

function formatUptime(seconds) {
    if (!seconds) return "–";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// -- STUN --------------------------------------------------------------------------------------
let stunPending = false;
function redoStun() {
    if (!send({ type: "redo_stun_request" })) return;
    stunPending = true;
    $("redoStun").disabled = true;
    $("redoStun").textContent = "STUN…";
    setBadge("badgeNat", "busy", "NAT: discovering…");
    setTimeout(() => {
        if (!stunPending) return;
        stunPending = false;
        $("redoStun").disabled = false;
        $("redoStun").textContent = "Redo STUN";
        setBadge("badgeNat", "bad", "NAT: no STUN answer");
    }, 15000);
}

// -- the benchmark -----------------------------------------------------------------------------
let benchRunning = false;
let benchTotal = 0;
let samples = [];  // [seconds since start, bytes/s]
let benchStart = 0;

function benchCommand() {
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const source = $("benchSource").value;
    const value = $("benchValue").value.trim();
    if (source === "size") {
        const mb = Number(value);
        if (!(mb > 0)) return null;
        return { type: "start_benchmark_send", mode, size: Math.round(mb * 1024 * 1024) };
    }
    return value ? { type: "start_benchmark_send", mode, [source]: value } : null;
}

function startBenchmark(event) {
    event.preventDefault();
    const command = benchCommand();
    if (!command) return ($("benchStatus").textContent = "Give a size in MB, a file or a URL.");
    if (!send(command)) return;
    benchTotal = command.size || 0;
    benchStarted(`starting a ${command.mode.toUpperCase()} run…`);
}

function benchStarted(text) {
    benchRunning = true;
    samples = [];
    benchStart = performance.now();
    $("benchProgress").value = 0;
    $("benchResult").hidden = true;
    $("benchStart").disabled = true;
    $("benchCancel").disabled = false;
    $("benchStatus").textContent = text;
    drawChart();
}

function benchDone(text) {
    benchRunning = false;
    $("benchStart").disabled = false;
    $("benchCancel").disabled = true;
    $("benchStatus").textContent = text;
}

const mb = (bytes) => (bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1);

function showProgress(data) {
    if (!benchRunning) benchStarted("receiving a run…");
    const total = Number(data.total || benchTotal || 0)
        || (data.rate && data.eta ? data.bytes + data.rate * data.eta : 0);
    const percent = total ? Math.min(100, (100 * data.bytes) / total) : 0;
    $("benchProgress").value = percent;
    const eta = Number.isFinite(data.eta) ? `${Math.max(0, data.eta).toFixed(1)} s left` : "";
    $("benchStatus").textContent = `${percent.toFixed(0)}% · ${mb(data.bytes)} MB · `
        + `${mb(data.rate || 0)} MB/s · ${eta}`;
    samples.push([(performance.now() - benchStart) / 1000, Number(data.rate) || 0]);
    if (samples.length > 600) samples.splice(0, samples.length - 600);
    drawChart();
}

function drawChart() {
    const canvas = $("benchChart");
    const scale = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 480, height = canvas.clientHeight || 140;
    canvas.width = width * scale;
    canvas.height = height * scale;
    const g = canvas.getContext("2d");
    g.setTransform(scale, 0, 0, scale, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "11px sans-serif";
    g.fillStyle = "#666";
    if (!samples.length) return g.fillText("throughput (MB/s) over time", 8, 16);
    const maxT = Math.max(1, samples[samples.length - 1][0]);
    const maxR = Math.max(...samples.map((s) => s[1])) || 1;
    const x = (t) => 36 + (t / maxT) * (width - 44), y = (r) => height - 16 - (r / maxR) * (height - 28);
    g.strokeStyle = "#ddd";
    g.beginPath(); g.moveTo(36, y(maxR)); g.lineTo(width - 8, y(maxR)); g.stroke();
    g.fillText(`${mb(maxR)} MB/s`, 2, y(maxR) + 4);
    g.fillText(`${maxT.toFixed(1)} s`, width - 40, height - 3);
    g.strokeStyle = "#2f6f9f";
    g.lineWidth = 2;
    g.beginPath();
    samples.forEach(([t, r], i) => (i ? g.lineTo(x(t), y(r)) : g.moveTo(x(t), y(r))));
    g.stroke();
}

function showResult(data) {
    const first = (...names) => names.map((n) => data[n]).find((v) => v !== undefined && v !== null);
    const goodput = first("goodput_mbps", "goodput_MBps", "goodput_mb_s", "goodput");
    const sha = first("sha256_match", "sha256_ok", "sha_match");
    const fields = [
        ["bytes", first("bytes", "total_bytes")],
        ["duration", first("duration") !== undefined ? `${Number(first("duration")).toFixed(3)} s` : undefined],
        ["goodput", goodput !== undefined ? `${Number(goodput).toFixed(2)} MB/s` : undefined],
        ["loss", first("loss", "lost")],
        ["reorder", first("reorder", "reordered")],
        ["SHA-256 match", sha === undefined ? undefined : (sha ? "yes" : "NO")],
        ["mode", first("mode")], ["role", first("role")],
        ["error", first("error")],
    ];
    const list = document.createElement("dl");
    for (const [name, value] of fields) {
        if (value === undefined || value === null || value === "") continue;
        const dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = name;
        dd.textContent = String(value);
        list.append(dt, dd);
    }
    const card = $("benchResult");
    const title = document.createElement("strong");
    title.textContent = data.error ? "Benchmark failed" : "Benchmark result";
    card.replaceChildren(title, list);
    card.dataset.ok = String(!data.error && sha !== false);
    card.hidden = false;
    if (!data.error) $("benchProgress").value = 100;
    benchDone(data.error ? `failed: ${data.error}` : "100% · done");
}

// -- wiring ------------------------------------------------------------------------------------
function wire() {
    $("sendUdp").addEventListener("click", () => sendChat("udp"));
    $("sendQuic").addEventListener("click", () => sendChat("quic"));
    $("messageInput").addEventListener("input", updateLimits);
    $("messageInput").addEventListener("keydown", (event) => {
        if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
        event.preventDefault();
        sendChat(event.ctrlKey || event.metaKey ? "quic" : "udp");
    });
    $("ping").addEventListener("click", () => {
        if (send({ type: "p2p_ping_command" })) $("pingResult").textContent = "pinging…";
    });
    const echo = () => {
        if (send({ type: "quic_echo_command", payload: $("echoInput").value || "ping" }))
            $("echoResult").textContent = "waiting…";
    };
    $("echo").addEventListener("click", echo);
    $("echoInput").addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); echo(); }
    });
    $("redoStun").addEventListener("click", redoStun);
    $("benchForm").addEventListener("submit", startBenchmark);
    $("benchCancel").addEventListener("click", () => {
        if (send({ type: "cancel_benchmark" })) $("benchStatus").textContent = "cancelling…";
    });
    $("benchSource").addEventListener("change", () => {
        $("benchValue").value = $("benchSource").value === "size" ? "10" : "";
    });
    window.addEventListener("resize", drawChart);
    updateLimits();
    drawChart();
    setInterval(refreshTree, 5000);  // uptimes move on between events
    connect();
}

wire();
