"""The embedded STUN responder of the rendezvous service, sans-I/O.

``binding_response`` is the whole logic of the embedded STUN responder.
"""

from __future__ import annotations

from typing import Any

from protocol.stun.attributes import Address, row_for_name
from protocol.stun.codec import BINDING, StunClass, StunMessage, parse_message, serialize_message

SOFTWARE_NAME = "p2p-rendezvous stun responder"


def binding_response(request: bytes, source: Address) -> bytes | None:
    """The responder's answer to a datagram from ``source``, or None if it wants none.

    Raises ``DecodeError`` on malformed input. There is one address here, so CHANGE-REQUEST
    cannot be honoured: an RFC 8489 client gets 420 (RFC 5780 §7.2); an RFC 3489 client is
    answered anyway, since pystun3 retransmits forever on an error and reports no address after
    silence. A NAT type measured against this responder is therefore meaningless.
    """
    message = parse_message(request)
    if message.method != BINDING or message.message_class != StunClass.REQUEST:
        return None
    if not message.magic_cookie:
        return serialize_message(_reply(message, StunClass.SUCCESS, ("MAPPED-ADDRESS", source)))
    refused = _refused_attributes(message)
    if refused:
        return serialize_message(_reply(
            message, StunClass.ERROR, ("ERROR-CODE", (420, "Unknown Attribute")),
            ("UNKNOWN-ATTRIBUTES", refused), ("SOFTWARE", SOFTWARE_NAME), ("FINGERPRINT", 0)))
    return serialize_message(_reply(
        message, StunClass.SUCCESS, ("XOR-MAPPED-ADDRESS", source), ("MAPPED-ADDRESS", source),
        ("SOFTWARE", SOFTWARE_NAME), ("FINGERPRINT", 0)))


def _refused_attributes(request: StunMessage) -> tuple[int, ...]:
    # RFC 8489 §6.3.1: unknown comprehension-required attributes (type < 0x8000) get a 420.
    unknown = [int(name, 16) for name, _ in request.attributes
               if name.startswith("0x") and int(name, 16) < 0x8000]
    if request.attribute("CHANGE-REQUEST"):
        unknown.append(row_for_name("CHANGE-REQUEST").type)
    return tuple(unknown)


def _reply(request: StunMessage, message_class: StunClass,
           *attributes: tuple[str, Any]) -> StunMessage:
    return StunMessage(request.method, message_class, request.transaction_id, attributes,
                       magic_cookie=request.magic_cookie)
