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
