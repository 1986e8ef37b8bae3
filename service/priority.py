"""Thread priorities: a heavy model's inference threads made to yield the cores (Linux).

On Linux a thread is a task with a nice value of its own, so the threads that run one model (its
batch thread and the intra-op threads ONNX Runtime starts with its session) can be given a higher
nice value than the event loop and the other models' threads: when the cores are shared, the
scheduler then runs those first whenever they are ready. Raising a nice value needs no privilege;
lowering one does, so a value below the thread's current one is left as it is, with a warning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)
_TASKS = "/proc/self/task"


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


def nice_this_thread(nice: int) -> None:
    """A ThreadPoolExecutor initializer: the calling thread takes `nice`."""
    set_nice([threading.get_native_id()], nice)
