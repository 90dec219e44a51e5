"""Connect to a Ray cluster, or start the embedded local one every job uses by default."""

from __future__ import annotations

import os


def runtime_env(local: bool) -> dict:
    """The job's runtime env (a fresh dict: Ray may write into it). A local Ray, sdeid's or the
    tests', also mutes the placement-group cleaner (see quiet_placement_group_cleaner)."""
    env = {"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
    if local:
        env["worker_process_setup_hook"] = "sdeid.ray_env.quiet_placement_group_cleaner"
    return env


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
    if address:
        ray.init(address=address, runtime_env=runtime_env(local=False))
    else:
        cpus = 2 * (os.cpu_count() or 1)
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env(local=True))
    return ray


def quiet_placement_group_cleaner():
    """Setup hook for the local Ray's workers: mute Ray Train's placement-group cleaner.

    The cleaner asks the State API every second whether the train controller still lives. The
    local Ray runs without the dashboard that serves that API (on 2 cores it would add 0.9 GB,
    0.9 s of start-up and 1.6 % of a core: benchmarks/ray_dashboard.py), so every ask logged a
    warning: 73 % of the lines of a main job's log. Nothing is lost: a local Ray ends with its
    driver, placement groups and all.
    """
    import logging

    name = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    logging.getLogger(name).setLevel(logging.ERROR)


def torch_trainer(
    loop, cfg, name: str, run_dir, checkpoint_config, loop_config=None, **trainer_kwargs
):
    """A Ray Train TorchTrainer for a stage config with num_workers, use_gpu, cpus_per_worker:
    gloo between CPU workers, NCCL between GPUs; checkpoints under run_dir/ray/<name>, where a
    rerun of the same command finds them and resumes. The loop gets `loop_config`, by default
    the config as a dict; `trainer_kwargs` (datasets, dataset_config) go to the trainer."""
    import dataclasses
    from pathlib import Path

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config=dataclasses.asdict(cfg) if loop_config is None else loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(run_dir).resolve() / "ray"),
            checkpoint_config=checkpoint_config,
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
        **trainer_kwargs,
    )
