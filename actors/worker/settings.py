"""A worker's settings, from the original's environment variables and matching flags.

Every setting is checked here, once, so a missing or malformed one is a one-line error naming it
(the command line exits 2), never a crash deep in an actor.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from messages.errors import ConfigError, DecodeError
from protocol.certs import fingerprint, load_or_create
from protocol.rendezvous.wire import validate_worker_id
from protocol.udp.peer_path import OPENING, RETRY_AFTER

DEFAULT_STUN_PORT = 3478  # the rendezvous service's embedded responder


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    rendezvous_url: str  # ws:// or wss:// base, no path
    stun_host: str
    stun_port: int
    udp_host: str
    udp_port: int
    ui_host: str
    ui_port: int
    ping_interval: float
    ping_timeout: float
    ip_echo_url: str  # "" means: ask the rendezvous service's /whoami
    token: str  # "" means none
    cert_pem: bytes
    key_pem: bytes
    fingerprint: str
    benchmark_url: str = ""  # BENCHMARK_GCS_URL: the default download of a url run
    benchmark_file: str = ""  # BENCHMARK_FILE: the file of a file run
    ui_token: str = ""  # required by the UI's page, API and WebSocket
    ui_allowed_origins: tuple[str, ...] = ()  # besides the UI's own origin
    peer_fingerprints: tuple[str, ...] = ()  # out-of-band pins: only these peers (if any)


    @property
    def ui_url(self) -> str:
        """The UI's address with its token, as printed at start (as Jupyter does)."""
        host = "127.0.0.1" if self.ui_host in ("0.0.0.0", "") else self.ui_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.ui_port}/?token={self.ui_token}"

    def config(self, *, signs: bool = False) -> dict[str, Any]:
        """What a worker actor receives as ``ctx.config``; the private key only if it ``signs``
        (quic: the TLS handshake and the client proof; rendezvous_client: the identity proof)."""
        config = asdict(self)
        if not signs:
            del config["key_pem"]
        return config

    def __repr__(self) -> str:  # never print the key
        return f"WorkerSettings(worker_id={self.worker_id!r}, rendezvous={self.rendezvous_url!r})"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_token(env: dict[str, str], ui_host: str) -> str:
    """``UI_TOKEN``, or a fresh one; a UI on a non-loopback address needs one set on purpose
    (a generated token would be printed only to whoever started the worker: still safe, but
    an address anyone can reach must be a deliberate choice)."""
    token = env.get("UI_TOKEN", "")
    if not token and not is_loopback(ui_host):
        raise ConfigError(f"UI_HOST={ui_host!r} is not a loopback address: set UI_TOKEN too "
                          "(anyone who can reach the UI could drive the worker)")
    if token and len(token) < 16:
        raise ConfigError("UI_TOKEN must be at least 16 characters")
    return token or secrets.token_urlsafe(24)


def pinned_fingerprints(raw: str) -> tuple[str, ...]:
    """``PEER_FINGERPRINTS``: comma-separated SHA-256 fingerprints, or the path of a file of
    them (one a line, ``#`` comments)."""
    if raw and os.path.isfile(raw):
        with open(raw) as lines:
            raw = ",".join(line.split("#")[0] for line in lines)
    pins = [item.strip().replace(":", "").lower() for item in raw.split(",") if item.strip()]
    for pin in pins:
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise ConfigError(f"PEER_FINGERPRINTS: {pin[:70]!r} is not a SHA-256 fingerprint")
    return tuple(pins)


@dataclass(frozen=True)
class PathSettings:
    """The udp actor's: who we are, and the timing of hole punching and ping."""

    worker_id: str
    punch_interval: float = 0.05
    punch_deadline: float = 10.0
    ping_timeout: float = 5.0
    punch_opening: float = OPENING
    punch_retry_after: float = RETRY_AFTER

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PathSettings:
        return cls(str(config["worker_id"]),
                   **floats(config, "punch_interval", "punch_deadline", "ping_timeout",
                            "punch_opening", "punch_retry_after"))


@dataclass(frozen=True)
class TunnelSettings:
    """The quic actor's: our identity (the key signs), and the tunnel's timing."""

    cert_pem: bytes
    key_pem: bytes
    quic_idle_timeout: float = 30.0
    quic_ping_interval: float = 10.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TunnelSettings:
        return cls(as_bytes(config["cert_pem"]), as_bytes(config["key_pem"]),
                   **floats(config, "quic_idle_timeout", "quic_ping_interval"))

    def __repr__(self) -> str:  # never print the key
        return "TunnelSettings(...)"


@dataclass(frozen=True)
class BenchmarkSettings:
    """The benchmark actor's: its payload sources and how long a silent peer is waited for."""

    worker_id: str
    benchmark_url: str = ""
    benchmark_file: str = ""
    answer_timeout: float = 5.0  # a UDP receiver silent this long ends the run
    stall_timeout: float = 15.0  # a QUIC run whose stream does not move this long ends

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BenchmarkSettings:
        return cls(str(config["worker_id"]), str(config.get("benchmark_url", "")),
                   str(config.get("benchmark_file", "")),
                   **floats(config, "answer_timeout", "stall_timeout"))


def benchmark_url(url: str) -> str:
    """BENCHMARK_GCS_URL: any http:// or https:// URL with a host, or nothing."""
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise ConfigError(f"BENCHMARK_GCS_URL={url!r} must be an http:// or https:// URL")
    return url


def floats(config: dict[str, Any], *names: str) -> dict[str, float]:
    """The optional number settings that ``config`` holds (tests tune them)."""
    return {name: float(config[name]) for name in names if name in config}


def as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def websocket_base(url: str, name: str = "RENDEZVOUS_SERVICE_URL") -> str:
    """http(s):// becomes ws(s)://, as the original did; the path is dropped."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ConfigError(f"{name}={url!r} must be an http(s):// or ws(s):// URL with a host")
    return f"{scheme}://{parts.netloc}"


def number(name: str, raw: str | None, default: float, *, whole: bool, low: float,
           high: float) -> Any:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole ' if whole else ''}number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def from_env(env: dict[str, str] | None = None, *, cert_dir: str = ".",
             **overrides: Any) -> WorkerSettings:
    """Settings from ``env`` (default: the process environment); ``overrides`` win (flags)."""
    env = dict(os.environ if env is None else env)
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    url = env.get("RENDEZVOUS_SERVICE_URL", "")
    if not url:
        raise ConfigError("RENDEZVOUS_SERVICE_URL is required (e.g. http://127.0.0.1:8080)")
    base = websocket_base(url)
    worker_id = env.get("WORKER_ID") or str(uuid.uuid4())
    try:
        validate_worker_id(worker_id)
    except DecodeError as exc:
        raise ConfigError(f"WORKER_ID: {exc.reason}") from None
    cert_pem, key_pem = load_or_create(str(Path(cert_dir) / "cert.pem"),
                                       str(Path(cert_dir) / "key.pem"))
    ui_host = env.get("UI_HOST") or "127.0.0.1"  # the UI drives the worker: local by default
    port = lambda name, default: number(name, env.get(name), default, whole=True,  # noqa: E731
                                        low=0, high=65535)
    seconds = lambda name, default: number(name, env.get(name), default, whole=False,  # noqa: E731
                                           low=0.1, high=3600)
    return WorkerSettings(
        worker_id=worker_id, rendezvous_url=base,
        stun_host=env.get("STUN_HOST") or (urlsplit(base).hostname or ""),
        stun_port=port("STUN_PORT", DEFAULT_STUN_PORT),
        udp_host=env.get("UDP_HOST", "0.0.0.0"), udp_port=port("INTERNAL_UDP_PORT", 8081),
        ui_host=ui_host, ui_port=port("PORT", 8080),
        ping_interval=seconds("PING_INTERVAL_SEC", 25.0),
        ping_timeout=seconds("PING_TIMEOUT_SEC", 25.0),
        ip_echo_url=env.get("IP_ECHO_URL", ""), token=env.get("RENDEZVOUS_TOKEN", ""),
        cert_pem=cert_pem, key_pem=key_pem, fingerprint=fingerprint(cert_pem),
        benchmark_url=benchmark_url(env.get("BENCHMARK_GCS_URL", "")),
        benchmark_file=env.get("BENCHMARK_FILE", ""),
        ui_token=ui_token(env, ui_host),
        ui_allowed_origins=tuple(o.strip() for o in env.get("UI_ALLOWED_ORIGINS", "").split(",")
                                 if o.strip()),
        peer_fingerprints=pinned_fingerprints(env.get("PEER_FINGERPRINTS", "")),
    )
