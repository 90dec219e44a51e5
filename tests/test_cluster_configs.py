"""Every cluster file loads and holds together: the launcher config against Ray's own schema,
the KubeRay and Kubernetes manifests for their required fields and scaling bounds, and every
command they run naming an entrypoint and a config that exist in this repository."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import yaml
from conftest import ROOT

CLUSTER = ROOT / "cluster"


def _load(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{path}: one mapping expected"
    return docs[0]


def _pinned_ray() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.search(r"==([\d.]+)", d).group(1) for d in deps if d.startswith("ray["))


def _check_command(words: list[str]):
    """A `python jobs/X.py --config F ...` command: X and F exist here."""
    i = words.index("python")
    assert (ROOT / words[i + 1]).is_file(), f"no entrypoint {words[i + 1]}"
    config = words[words.index("--config") + 1]
    assert (ROOT / config).is_file(), f"no config {config}"


def _launcher_check(cfg):
    """What `ray up` does first: fill in the provider's defaults, then check the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


def test_launcher_config_matches_rays_schema():
    cfg = _load(ROOT / "ray_cluster.yaml")
    _launcher_check(cfg)  # raises on a key or type the launcher would refuse
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert sum(t["max_workers"] for t in types.values()) >= cfg["max_workers"] > 0
    for name, t in types.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    setup = cfg["setup_commands"]
    assert any('pip install -q -e ".[gpu]"' in c for c in setup)
    assert cfg["file_mounts"]["~/sdeid"] == "."
    # /shared is a network mount on every node (Ray Train's storage and the runs live there),
    # made with the privileges it needs; `ray` comes from the venv that has it.
    assert any("mount -t nfs4" in c and "/shared" in c for c in setup)
    assert any(c.startswith("sudo mkdir -p /shared") for c in setup)
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert cmd.startswith("~/sdeid/.venv/bin/ray "), cmd


def test_launcher_schema_check_is_real():
    import jsonschema

    cfg = _load(ROOT / "ray_cluster.yaml")
    cfg["available_node_types"]["head"]["min_worker"] = 0  # a typo the launcher must refuse
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        _launcher_check(cfg)


def _pod_containers(template):
    containers = template["spec"]["containers"]
    assert containers and all(c["image"] and c["name"] for c in containers)
    return containers


def _check_ray_cluster_spec(spec):
    assert spec["rayVersion"] == _pinned_ray()
    _pod_containers(spec["headGroupSpec"]["template"])
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        for c in _pod_containers(group["template"]):
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            assert gpus is None or int(gpus) > 0


def test_kuberay_raycluster():
    m = _load(CLUSTER / "raycluster.yaml")
    assert (m["apiVersion"], m["kind"]) == ("ray.io/v1", "RayCluster")
    assert m["metadata"]["name"]
    _check_ray_cluster_spec(m["spec"])


def test_kuberay_rayjob_runs_the_pipeline():
    m = _load(CLUSTER / "rayjob-meddocan.yaml")
    assert (m["apiVersion"], m["kind"]) == ("ray.io/v1", "RayJob")
    _check_command(shlex.split(m["spec"]["entrypoint"]))
    yaml.safe_load(m["spec"]["runtimeEnvYAML"])
    _check_ray_cluster_spec(m["spec"]["rayClusterSpec"])


def test_refresh_cronjob_submits_the_refresh_job():
    m = _load(CLUSTER / "refresh-cronjob.yaml")
    assert (m["apiVersion"], m["kind"]) == ("batch/v1", "CronJob")
    assert len(m["spec"]["schedule"].split()) == 5
    assert m["spec"]["concurrencyPolicy"] == "Forbid"
    pod = m["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    (container,) = _pod_containers(pod)
    words = container["command"]
    assert words[:3] == ["ray", "job", "submit"]
    _check_command(words)


def test_runtime_env_and_image_recipe():
    env = _load(CLUSTER / "runtime_env.yaml")
    known = {"working_dir", "excludes", "env_vars", "pip", "py_modules", "conda", "uv"}
    assert set(env) <= known, set(env) - known
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    docker = (CLUSTER / "Dockerfile").read_text()
    assert f"rayproject/ray:{_pinned_ray()}-" in docker
    assert 'pip install --no-cache-dir -e ".[gpu]"' in docker


def _gpu_pipeline():
    from sdeid.pipeline import load_pipeline_config

    return load_pipeline_config(ROOT / "configs" / "meddocan-gpu.yaml")


@pytest.mark.parametrize("manifest", ["raycluster.yaml", "rayjob-meddocan.yaml"])
def test_every_gpu_stage_fits_the_pods_with_no_gpu_idle(manifest):
    from sdeid.cluster_fit import fit, kuberay_gpu_pod, stage_demands

    pod = kuberay_gpu_pod(_load(CLUSTER / manifest))
    rows = [fit(d, pod) for d in stage_demands(_gpu_pipeline())]
    assert [r["stage"] for r in rows] == [
        "annotator",
        "adapt",
        "synthetic_ner",
        "generate",
        "annotate",
    ]
    assert all(not r["problems"] for r in rows), [r for r in rows if r["problems"]]
    adapt = next(r for r in rows if r["stage"] == "adapt")
    assert adapt["pods"] == 1 and adapt["idle_gpus"] == 0  # 4 workers, one 4-GPU pod


def test_the_fit_finds_workers_split_over_pods():
    """The old pods (30 CPUs) with adapt's 4 workers x 8 CPUs: 3 fit a pod, 1 goes elsewhere."""
    import dataclasses

    from sdeid.cluster_fit import Pod, fit, stage_demands

    adapt = next(d for d in stage_demands(_gpu_pipeline()) if d.stage == "adapt")
    row = fit(adapt, Pod(cpus=30, gpus=4, max_replicas=4))
    assert row["per_pod"] == 3 and row["pods"] == 2 and row["idle_gpus"] == 4
    assert "sit idle" in row["problems"][0]
    too_many = fit(dataclasses.replace(adapt, count=20), Pod(cpus=44, gpus=4, max_replicas=4))
    assert "needs 5 pods, the group allows 4" in too_many["problems"]


def test_install_check_reads_the_image_against_the_gpu_wheels(tmp_path):
    """cluster/check_install.py's image check on a resolver report: the real report comes from
    pip in CI (.ci/run); here a report of the same shape shows the check can fail."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_install", CLUSTER / "check_install.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)

    def report(cp, cuda):
        def item(name, version, url):
            return {"metadata": {"name": name, "version": version}, "download_info": {"url": url}}

        return {
            "install": [
                item(
                    "torch", "2.14.0", f"https://x/torch-2.14.0-{cp}-{cp}-manylinux_2_28_x86_64.whl"
                ),
                item("nvidia-cuda-runtime", cuda, "https://x/nvidia_cuda_runtime.whl"),
            ]
        }

    assert check.check_image(report("cp311", "13.0.96"), CLUSTER / "Dockerfile") == []
    problems = check.check_image(report("cp312", "12.8.90"), CLUSTER / "Dockerfile")
    assert len(problems) == 2 and "cp312" in problems[0] and "CUDA runtime 12.8" in problems[1]
