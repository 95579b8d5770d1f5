"""The rendezvous protocol, sans-I/O: its JSON wire and the service's matchmaking.

``wire`` (every JSON message of the WebSocket edge, checked from hostile text, with ``fields``
and ``outbound``), ``client_wire`` (what a worker makes of the service's messages), ``registry``
(worker records), ``pairing`` (the pairing table, its ``events`` and ``snapshot``).
"""
