"""Run a step's tasks on Ray when the job runs on Ray, else one after another in this process.

Stages whose work is a task per shard (clean-up, the audit) use this: on a cluster (or in
`sdeid run`, which starts the embedded Ray) each task runs where Ray puts it and writes its own
output; a command run without Ray (the hf generate backend, `sdeid audit` alone) does the same
work in order without paying for a Ray start.
"""

from __future__ import annotations

import sys


def task_runner(num_cpus: float = 1, num_gpus: float = 0):
    """run(fn, [args, ...]) -> [fn(*args), ...], in order."""
    ray = sys.modules.get("ray")  # not imported: this job does not run on Ray
    if ray is None or not ray.is_initialized():
        return lambda fn, calls: [fn(*args) for args in calls]

    def run(fn, calls):
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(fn)
        try:
            return ray.get([remote.remote(*args) for args in calls])
        except ray.exceptions.RayTaskError as e:
            raise sdeid_cause(e) or e from None

    return run


def shared(value):
    """A large read-only argument every task gets: put once into Ray's object store."""
    ray = sys.modules.get("ray")
    return ray.put(value) if ray is not None and ray.is_initialized() else value


def sdeid_cause(error: BaseException):
    """The SdeidError (a bad shard, a full disk) inside an error Ray raised for a task, or None:
    its message is the one users should see, not Ray's wrapping of it."""
    from sdeid.errors import SdeidError

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None)  # a Ray task error holds the original here
        if inner is None and isinstance(error, SdeidError):
            return error
        error = inner or error.__cause__
    return None
