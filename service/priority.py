"""Thread priorities: a heavy model's inference threads made to yield the cores (Linux).

On Linux a thread is a task with a nice value of its own, so the threads that run one model (its
batch thread and the intra-op threads ONNX Runtime starts with its session) can be given a higher
nice value than the event loop and the other models' threads: when the cores are shared, the
scheduler then runs those first whenever they are ready. Raising a nice value needs no privilege;
lowering one does, so a value below the thread's current one is left as it is, with a warning.

A nice value only weighs a thread's share: at nice 19 a busy thread still takes its turn on a core
that a ready thread of the event loop or of a light model wants. `idle` puts the threads under
Linux's SCHED_IDLE policy instead, which runs them only when no other thread is ready for that core;
that too needs no privilege (only leaving SCHED_IDLE does).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)
_TASKS = "/proc/self/task"
IDLE = "idle"  # SCHED_IDLE, in place of a nice value
Priority = int | str  # a nice value from 0 to 19, or IDLE


def process_threads() -> set[int]:
    """The native ids of this process's threads ({} where /proc is not there)."""
    try:
        return {int(task) for task in os.listdir(_TASKS)}
    except OSError:
        return set()


def set_nice(threads: Iterable[int], nice: int) -> int:
    """Give these threads the nice value `nice`; returns how many took it."""
    done = 0
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) == nice:
                done += 1
                continue
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            done += 1
        except ProcessLookupError:  # the thread has ended
            continue
        except PermissionError:
            log.warning("thread %d: cannot set nice %d (below its current value needs privileges)", tid, nice)
    return done


def set_idle(threads: Iterable[int]) -> int:
    """Put these threads under SCHED_IDLE; returns how many took it."""
    done = 0
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            done += 1
        except ProcessLookupError:  # the thread has ended
            continue
    return done


def set_priority(threads: Iterable[int], priority: Priority) -> int:
    """A nice value, or IDLE, for these threads; returns how many took it."""
    return set_idle(threads) if priority == IDLE else set_nice(threads, int(priority))


def priority_this_thread(priority: Priority) -> None:
    """A ThreadPoolExecutor initializer: the calling thread takes `priority`."""
    set_priority([threading.get_native_id()], priority)
