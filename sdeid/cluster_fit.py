"""Does every stage of a pipeline config fit the cluster's GPU pods, with no GPU left idle?

Each stage asks Ray for bundles: Ray Train workers (annotator, adapt, synthetic NER), vLLM engine
replicas (a GPU and `cpus_per_engine` CPUs per tensor/pipeline rank, packed on one node) and
annotator actors. A stage fits when its bundles pack onto at most `max_replicas` pods and the
CPUs do not run out before the GPUs do: a Ray Train worker that cannot find CPUs on a pod whose
GPUs are free lands on another pod, and the free GPUs sit idle for the whole stage (the KubeRay
config once gave 30 CPUs a pod to 4 workers asking 8 each). One CPU a pod is kept for Ray Data's
small tasks and Ray Train's controller, since the head runs no stage work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESERVED_CPUS = 1.0


@dataclass(frozen=True)
class Pod:
    cpus: float
    gpus: int
    max_replicas: int


@dataclass(frozen=True)
class Demand:
    stage: str
    count: int
    cpus: float
    gpus: int


def stage_demands(cfg) -> list[Demand]:
    """The GPU bundles each stage of a PipelineConfig asks for (CPU-only stages are left out)."""
    from sdeid.annotate import AnnotateConfig
    from sdeid.generate import GenerateConfig, engine_bundles

    demands = []
    syn = {**cfg.annotator, **cfg.synthetic_ner}
    for stage, section in (
        ("annotator", cfg.annotator),
        ("adapt", cfg.adapt),
        ("synthetic_ner", syn),
    ):
        if section.get("use_gpu"):
            n, cpus = section.get("num_workers", 1), section.get("cpus_per_worker", 2.0)
            demands.append(Demand(stage, n, cpus, 1))
    gen = GenerateConfig(model="-", unconditional=True, **cfg.generate)
    if gen.use_gpu and gen.backend == "vllm":
        bundles = engine_bundles(gen)["bundles"]
        cpus, gpus = sum(b["CPU"] for b in bundles), sum(b["GPU"] for b in bundles)
        demands.append(Demand("generate", gen.engine_replicas, cpus, gpus))
    ann = AnnotateConfig(notes="-", model="-", **cfg.annotate)
    if ann.use_gpu:
        demands.append(Demand("annotate", ann.annotators, ann.cpus_per_annotator, 1))
    return demands


def fit(demand: Demand, pod: Pod) -> dict:
    """How `demand` packs onto `pod`s, and what is wrong with it (empty `problems`: fits)."""
    problems = []
    by_gpu = pod.gpus // demand.gpus
    by_cpu = int((pod.cpus - RESERVED_CPUS) // demand.cpus) if demand.cpus else by_gpu
    per_pod = min(by_gpu, by_cpu)
    if per_pod == 0:
        problems.append(
            f"one bundle ({demand.cpus:g} CPU, {demand.gpus} GPU) does not fit a pod "
            f"({pod.cpus:g} CPU less {RESERVED_CPUS:g} kept, {pod.gpus} GPU)"
        )
        return dict(row(demand, per_pod, 0, 0), problems=problems)
    pods = math.ceil(demand.count / per_pod)
    idle = pods * pod.gpus - demand.count * demand.gpus
    if by_cpu < by_gpu and demand.count > per_pod:
        problems.append(
            f"{per_pod} of {by_gpu} bundles fit a pod by CPU ({demand.cpus:g} each, "
            f"{pod.cpus - RESERVED_CPUS:g} usable): the rest go to other pods and "
            f"{idle} GPUs sit idle; lower the CPUs per bundle or give pods more"
        )
    elif idle and demand.count > per_pod:
        problems.append(f"{demand.count} bundles leave {idle} GPUs idle on {pods} pods")
    if pods > pod.max_replicas:
        problems.append(f"needs {pods} pods, the group allows {pod.max_replicas}")
    return dict(row(demand, per_pod, pods, idle), problems=problems)


def row(demand: Demand, per_pod: int, pods: int, idle: int) -> dict:
    return dict(
        stage=demand.stage,
        bundles=demand.count,
        bundle=f"{demand.cpus:g} CPU + {demand.gpus} GPU",
        per_pod=per_pod,
        pods=pods,
        idle_gpus=idle,
    )


def kuberay_gpu_pod(manifest: dict) -> Pod:
    """The GPU worker group of a KubeRay RayCluster manifest as a Pod (limits are what Ray
    sees: it reads the container's CPU limit and nvidia.com/gpu)."""
    spec = manifest["spec"]
    spec = spec.get("rayClusterSpec", spec)
    (group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    return Pod(float(limits["cpu"]), int(limits["nvidia.com/gpu"]), int(group["maxReplicas"]))
