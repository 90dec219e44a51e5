"""Connect to a Ray cluster, or start the embedded local one every job uses by default."""

from __future__ import annotations

import os


def init_ray(address: str | None = None):
    """Join `address` (or RAY_ADDRESS) when given; otherwise start a local Ray.

    The local Ray advertises twice the machine's cores as logical CPUs: Ray Data's small
    read/repartition tasks ask for a whole CPU each, and on a 2-core machine they would
    otherwise wait forever behind an engine actor holding a core (see ../shared/STACK.md).
    The real work is threads inside the actors, which the OS shares out anyway.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
    if address:
        ray.init(address=address, runtime_env=env)
    else:
        ray.init(num_cpus=2 * (os.cpu_count() or 1), include_dashboard=False, runtime_env=env)
    return ray
