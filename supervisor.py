"""The entry point: ``python supervisor.py rendezvous|worker|demo|tree|restart|stop|events``.

Run commands start a supervisor tree and keep it until Ctrl-C or SIGTERM; control commands talk
to a running tree through its run directory (printed at start, and given with ``--rundir``).
A missing or malformed setting is a one-line error naming it, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from messages.errors import ConfigError, P2PError

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_STUN_PORT = 3478


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0-65535")
    return value


def optional(module: str, name: str, issue: str) -> Callable[..., Any]:
    """A tree factory from a part that may not be installed in this version."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"this version has no {issue} yet ({module}.{name} is missing)") from None


# -- run commands ---------------------------------------------------------------------------------
def env_port(name: str, default: int) -> int:
    value = env_int(name, default)
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name}={value} is outside 0-65535")
    return value


def cmd_rendezvous(args: argparse.Namespace) -> int:
    from actors import run_root
    from actors.rendezvous.tree import rendezvous_spec

    args.host = args.host or os.environ.get("HOST") or DEFAULT_HOST
    args.port = env_port("PORT", DEFAULT_PORT) if args.port is None else args.port
    if args.stun_port is None:
        args.stun_port = env_port("RENDEZVOUS_STUN_PORT", DEFAULT_STUN_PORT)
    if args.max_workers is None:
        args.max_workers = env_int("RENDEZVOUS_MAX_WORKERS", 10_000)

    proxies = [p for p in os.environ.get("RENDEZVOUS_TRUSTED_PROXIES", "").split(",") if p]
    spec = rendezvous_spec(args.host, args.port, args.stun_port, trusted_proxies=proxies,
                           token=os.environ.get("RENDEZVOUS_TOKEN") or None,
                           max_workers=args.max_workers,
                           admin_token=os.environ.get("RENDEZVOUS_ADMIN_TOKEN") or None,
                           per_address=env_int("RENDEZVOUS_MAX_PER_ADDRESS", 256),
                           allow_unproven=os.environ.get("RENDEZVOUS_ALLOW_UNPROVEN_IDS",
                                                         "1") not in ("0", "false", "no"))
    return run_root(spec, rundir=args.rundir, log_level=args.log_level,
                    on_ready=lambda tree: announce(f"rendezvous on http://{args.host}:{args.port}"
                                                   f" (STUN udp {args.stun_port})", tree))


WORKER_FLAGS = {  # flag -> (the original's environment variable it stands for, what it is)
    "rendezvous_url": ("RENDEZVOUS_SERVICE_URL",
                       "the rendezvous service, http(s):// or ws(s):// (required)"),
    "stun_host": ("STUN_HOST", "STUN server (default: the rendezvous host)"),
    "stun_port": ("STUN_PORT", "STUN port (default 3478, the rendezvous' embedded responder)"),
    "udp_port": ("INTERNAL_UDP_PORT", "the worker's UDP port (default 8081; 0 picks one)"),
    "port": ("PORT", "the web UI's port (default 8080)"),
    "ping_interval": ("PING_INTERVAL_SEC", "WebSocket keepalive to the rendezvous (default 25)"),
    "ping_timeout": ("PING_TIMEOUT_SEC", "how long a keepalive may go unanswered (default 25)"),
    "worker_id": ("WORKER_ID", "1-64 of [A-Za-z0-9_-] (default: a new UUID)"),
    "udp_host": ("UDP_HOST", "address the UDP socket binds (default 0.0.0.0)"),
    "ui_host": ("UI_HOST", "address the web UI binds (default 127.0.0.1; any other needs "
                           "UI_TOKEN)"),
    "ui_token": ("UI_TOKEN", "the UI's access token (default: a new one, printed in the URL)"),
    "ui_allowed_origins": ("UI_ALLOWED_ORIGINS",
                           "other origins allowed on /ui_ws, comma-separated (default none)"),
    "peer_fingerprints": ("PEER_FINGERPRINTS", "accept only peers with these certificate "
                          "fingerprints (comma-separated, or a file of them)"),
    "ip_echo_url": ("IP_ECHO_URL", "where to learn the public IP (default: rendezvous /whoami)"),
}


def cmd_worker(args: argparse.Namespace) -> int:
    from actors import run_root
    from actors.worker.settings import from_env
    from actors.worker.tree import worker_spec

    settings = from_env(cert_dir=args.cert_dir,
                        **{env: getattr(args, flag) for flag, (env, _) in WORKER_FLAGS.items()})
    ui = settings.ui_url
    return run_root(worker_spec(settings), rundir=args.rundir, log_level=args.log_level,
                    on_ready=lambda tree: announce(
                        f"worker {settings.worker_id} (certificate {settings.fingerprint[:16]}…)"
                        f" UI on {ui}", tree))


def cmd_demo(args: argparse.Namespace) -> int:
    from actors import run_root

    setup = optional("demo", "demo", "two-worker demo")(args.port, args.stun_port)
    lines = [f"rendezvous service: {setup.rendezvous_url}/debug/list_workers"]
    lines += [f"worker {name} UI:  {url}" for name, url in setup.ui_urls.items()]
    return run_root(setup.spec, rundir=args.rundir, log_level=args.log_level,
                    on_ready=lambda tree: announce("\n".join(lines) + "\ndemo running", tree))


def announce(what: str, tree: Any) -> None:
    print(f"{what}; run directory {tree.rundir}; Ctrl-C stops everything", flush=True)


# -- control commands -----------------------------------------------------------------------------
def client(args: argparse.Namespace) -> Any:
    from actors.client import Client

    if not args.rundir or not os.path.isdir(args.rundir):
        raise ConfigError(f"--rundir {args.rundir!r} is not the run directory of a running tree")
    return Client(args.rundir)


def root_of(path: str) -> str:
    return path.split("/", 1)[0]


def cmd_tree(args: argparse.Namespace) -> int:
    nodes = client(args).tree(args.root)
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 0
    for n in nodes:
        depth = n["path"].count("/")
        print(f"{'  ' * depth}{n['path'].rsplit('/', 1)[-1]:<18} {n['state']:<10} pid {n['pid']:<7}"
              f" restarts {n['restarts']:<3} up {n['uptime']:>9.1f}s  {n['last_exit']}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    print(on_path(args, lambda c: c.restart(root_of(args.path), args.path)))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(on_path(args, lambda c: c.stop(root_of(args.path), args.path)))
    return 0


def on_path(args: argparse.Namespace, request: Callable[[Any], str]) -> str:
    """A control request about one actor; a path that names none is a usage error."""
    from messages.errors import NoSuchActor, RemoteError

    try:
        return request(client(args))
    except (NoSuchActor, RemoteError) as exc:
        if isinstance(exc, RemoteError) and exc.remote_type not in ("NoSuchActor", "UsageError"):
            raise
        raise ConfigError(f"no actor at {args.path!r} in this tree (a path starts with the "
                          "root's name, as `tree ROOT` shows it)") from None


def cmd_events(args: argparse.Namespace) -> int:
    c = client(args)
    c.subscribe(args.root)
    for event in c.events(args.idle):
        print(f"{event.at:.3f} {event.kind:<12} {event.path:<24} pid {event.pid:<7} {event.reason}",
              flush=True)
    return 0


# -- parsing --------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="supervisor.py", description=__doc__.split("\n")[0])
    p.add_argument("--log-level", default="INFO", type=lambda s: getattr(logging, s.upper()),
                   help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("rendezvous", help="run the rendezvous service")
    # Defaults from the environment are read when the command runs, not here: a malformed
    # variable must not break --help, nor the commands that do not use it.
    r.add_argument("--host", help="listen address (env HOST, default 0.0.0.0)")
    r.add_argument("--port", type=port, help="HTTP/WebSocket port (env PORT, default 8080)")
    r.add_argument("--stun-port", type=port,
                   help="embedded STUN responder's UDP port (env RENDEZVOUS_STUN_PORT, 3478)")
    r.add_argument("--max-workers", type=int,
                   help="cap on registered workers (env RENDEZVOUS_MAX_WORKERS, 10000)")
    r.set_defaults(run=cmd_rendezvous)

    w = sub.add_parser("worker", help="run a worker (flags override the environment variables)")
    for flag, (env, text) in WORKER_FLAGS.items():
        w.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None,
                       help=f"{text}; env {env}")
    w.add_argument("--cert-dir", default=".",
                   help="where cert.pem/key.pem are read, or written when absent (default .)")
    w.set_defaults(run=cmd_worker)

    d = sub.add_parser("demo", help="a rendezvous service and two workers on loopback, offline")
    d.add_argument("--port", type=port, default=0, help="rendezvous HTTP port (default: free)")
    d.add_argument("--stun-port", type=port, default=0,
                   help="rendezvous STUN port (default: free)")
    d.set_defaults(run=cmd_demo)

    for name, func, text in (("tree", cmd_tree, "print the live supervisor tree"),
                             ("events", cmd_events, "follow the tree events")):
        c = sub.add_parser(name, help=text)
        c.add_argument("root", help="the root supervisor's name (rendezvous, worker, demo)")
        c.set_defaults(run=func)
    sub.choices["tree"].add_argument("--json", action="store_true")
    sub.choices["events"].add_argument("--idle", type=float, default=3600.0,
                                       help="stop after this many seconds without an event")
    for name, func in (("restart", cmd_restart), ("stop", cmd_stop)):
        c = sub.add_parser(name, help=f"{name} the actor at PATH (e.g. worker/quic)")
        c.add_argument("path")
        c.set_defaults(run=func)
    for c in sub.choices.values():
        c.add_argument("--rundir", help="the tree's run directory (env P2P_RUNDIR)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        args.rundir = args.rundir or os.environ.get("P2P_RUNDIR") or None
        return args.run(args)
    except ConfigError as exc:
        print(f"supervisor.py: {exc.reason}", file=sys.stderr)
        return 2
    except P2PError as exc:
        print(f"supervisor.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
