"""`import sdeid` and `sdeid --help` must not load the heavy stack (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "ray", "vllm", "deepspeed", "transformers", "pyarrow")

CHECK = f"""
import sys
import sdeid, sdeid.cli, sdeid.schema, sdeid.config
try:
    sdeid.cli.main(["--help"])
except SystemExit:
    pass
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, loaded
"""


def test_light_import_in_fresh_process():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: sdeid" in out.stdout
