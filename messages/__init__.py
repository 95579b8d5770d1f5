"""Every message type, its msgpack encoding and validation."""

from messages.codec import (
    MAX_FRAME_BYTES,
    Envelope,
    encode,
    encode_envelope,
    pack_batch,
    registered,
    unpack_batch,
)
from messages.errors import DecodeError, P2PError
from messages.tags import Tag

__all__ = [
    "MAX_FRAME_BYTES", "Envelope", "encode", "encode_envelope", "pack_batch", "registered",
    "unpack_batch", "DecodeError", "P2PError", "Tag",
]
