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
    sdeid's bookkeeping files left out.

    Two shortcuts keep it cheap on large inputs, with the same answer: a shard folder's shards
    are stood for by their `_done` markers, which hold each shard's sha256 (and readers check
    it), so a million notes are not read again; and a fingerprint is cached by its files' paths,
    sizes and modification times (in SDEID_FINGERPRINT_CACHE, by default
    ~/.cache/sdeid/fingerprints.json), so a 13 GB base model is hashed once.
    """
    path = Path(path)
    files = _content_files(path)
    stamp = hashlib.sha256(
        json.dumps([str(path.resolve())] + [[str(f), *_stat(f)] for f in files]).encode()
    ).hexdigest()
    cache = _load_cache()
    if stamp in cache:
        return cache[stamp]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _save_cache(stamp, h.hexdigest())
    return h.hexdigest()


def _stat(f: Path) -> tuple:
    st = f.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _content_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)
    # A shard folder: its markers, not its shards (the marker names the shard's sha256).
    stores = {m.parent.parent for m in files if m.parent.name == "_done"}
    return [
        f
        for f in files
        if not (f.suffix == ".parquet" and f.parent in stores and f.name.startswith("shard-"))
    ]


def _cache_path() -> Path:
    default = Path.home() / ".cache" / "sdeid" / "fingerprints.json"
    return Path(os.environ.get("SDEID_FINGERPRINT_CACHE", default))


def _load_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(stamp: str, digest: str) -> None:
    """Add one entry; a cache that cannot be written only costs the next run a re-hash."""
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _load_cache()
        cache[stamp] = digest
        if len(cache) > 10_000:  # oldest first (insertion order): a bounded file
            cache = dict(list(cache.items())[-10_000:])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass


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
