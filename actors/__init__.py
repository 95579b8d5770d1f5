"""The actor runtime: process actors, mailboxes, addressing by path, and supervision.

See docs/ARCHITECTURE.md for the design and the delivery guarantees.
"""

from actors.actor import Actor, ActorContext, Ref
from actors.client import Client
from actors.spec import ChildSpec, Restart, SocketSpec, Strategy, SupervisorSpec
from actors.tree import run_root

__all__ = [
    "Actor", "ActorContext", "Ref", "Client", "ChildSpec", "Restart", "SocketSpec", "Strategy",
    "SupervisorSpec", "run_root",
]
