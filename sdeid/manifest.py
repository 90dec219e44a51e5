"""`_manifest.json`: every output folder says what made it, from what, and how long it took."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from sdeid.schema import SCHEMA_VERSION

MANIFEST = "_manifest.json"
STAGE_DONE = "_stage.json"
"""Written last into a `sdeid run` stage's folder: the stage finished."""
# What sdeid writes about a folder rather than into its content. Both hold times, so a
# fingerprint that read them would differ between two runs that made the same model.
BOOKKEEPING = frozenset({MANIFEST, STAGE_DONE})


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint_path(path) -> str:
    """sha256 over the relative names and bytes of every file under `path` (or of the file),
    sdeid's bookkeeping files left out."""
    path = Path(path)
    h = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)
    )
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_manifest(out_dir, stage: str, config: dict, inputs: dict, **fields) -> Path:
    """Write the manifest atomically (temporary file, then rename)."""
    from sdeid import __version__

    out_dir = Path(out_dir)
    record = {
        "stage": stage,
        "schema_version": SCHEMA_VERSION,
        "sdeid_version": __version__,
        "git_commit": git_commit(),
        "created_unix": time.time(),
        "config": config,
        "inputs": inputs,
        **fields,
    }
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, out_dir / MANIFEST)
    return out_dir / MANIFEST


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {MANIFEST} (not an sdeid output folder?)")
    return json.loads(path.read_text())
