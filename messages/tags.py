"""The one table of message tags. A tag is forever: never renumber, only append.

Ranges: 1-49 the actor runtime, 50-69 tests and benchmarks, 100-149 the rendezvous service,
150-229 the worker.
"""

from enum import IntEnum


class Tag(IntEnum):
    # actor runtime
    REPLY = 1
    FAULT = 2
    TREE_REQUEST = 10
    RESTART_CHILD = 11
    STOP_CHILD = 12
    SUBSCRIBE = 13
    TREE_EVENT = 14
    DEAD_LETTER = 15
    # tests and benchmarks
    PROBE = 50
    PROBE_BATCH = 51
    RECORD = 52
    RECORDED = 53
    # worker (150-229)
    UDP_SEND = 150
    UDP_RECEIVED = 151
    PEER_OFFER = 152
    PEER_GONE = 153
    PATH_STATUS = 154
    STUN_RESULT = 155
    REDO_STUN = 156
    UI_EVENT = 157
    CHAT_SEND = 158
    PING_PEER = 159
    ECHO_PEER = 160
    STATUS_REQUEST = 161
    TUNNEL_STATUS = 162
    BENCHMARK_START = 163
    BENCHMARK_CANCEL = 164
    QUIC_BENCH_WRITE = 165
    QUIC_BENCH_CANCEL = 166
    QUIC_BENCH_STATUS = 167
    # rendezvous service
    WORKER_CONNECTED = 100
    PUBLIC_IP_REPORTED = 101
    ENDPOINT_REPORTED = 102
    DEREGISTER_REQUESTED = 103
    PEER_REQUESTED = 104
    WORKER_DISCONNECTED = 105
    EDGE_STARTED = 106
    WORKER_UPDATE = 107
    CLOSE_WORKER = 108
    WORKER_READY = 109
    WORKER_GONE = 110
    PAIR_REQUEST = 111
    DELIVER = 112
    LEDGER_REQUEST = 113
    # 114, 115: retired (the listing's page asks; the edge builds it from its ledger)
    STUN_STATS_REQUEST = 116
