"""The authenticated QUIC tunnel between two paired workers, sans-I/O, over aioquic.

``connection`` (``Tunnel``: one QUIC connection, pinned at both ends), ``session`` (which
connection is the current one, and the rules for opening the next), and their parts: ``quic``
(aioquic configuration, keepalive), ``auth`` (the client proof on the control stream), ``app``
(chat and echo streams), ``chat`` (the exactly-once outbox and inbox), ``frames`` and
``streams`` (the length-prefixed frames on a stream), ``events`` (what the owner drains).
"""
