"""kill -9 of a whole job started in a session of its own: the driver and every Ray process.

The fault tests and the benchmarks' kill-and-resume runs use it. Killing the driver's process
group is not enough: Ray starts each worker in a process group of its own (in the driver's
session), so the workers live on until they notice the raylet is gone, and one that is writing
a shard may finish it after the "kill".
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid`, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if fields[0] != "Z" and int(fields[3]) == sid:  # a zombie runs nothing
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int, timeout: float = 30) -> None:
    """SIGKILL every process of session `sid` (the pid of a process started with
    `start_new_session=True`) and wait until none is left: the job writes nothing after this
    returns."""
    deadline = time.time() + timeout
    while pids := session_pids(sid):
        if time.time() > deadline:
            raise RuntimeError(f"processes {pids} of the killed job did not exit")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
