"""Imports every message module, so a process knows every tag whatever it imported itself: a
datagram carrying a tag this process never registered would otherwise be refused."""

import messages.rendezvous  # noqa: F401
import messages.runtime  # noqa: F401
import messages.worker  # noqa: F401
