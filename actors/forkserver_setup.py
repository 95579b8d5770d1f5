"""Imported by each fork server (it is in the preload list) and by nothing else.

A fork server outlives nothing: it exits when the supervisor that started it does. But a stop
signal sent to the whole process group (``kill -TERM -PGID``, a service manager stopping the
unit) would kill it first, and then every child's exit status is lost (multiprocessing reports
255). So the fork server ignores SIGTERM; each child restores the default at its start
(``actors.child.main``) before the runtime installs its own handler.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
