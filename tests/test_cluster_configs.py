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
    assert any('pip install -q -e ".[gpu]"' in c for c in cfg["setup_commands"])
    assert cfg["file_mounts"]["~/sdeid"] == "."


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
