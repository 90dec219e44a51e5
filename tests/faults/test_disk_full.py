"""A full disk while generate writes its shards (the output folder on a small tmpfs): a clear
error naming the shard, the finished shards kept, and after room is made the same command
finishes with every note exactly once."""

from __future__ import annotations

import hashlib
import subprocess

import pyarrow.parquet as pq
import pytest
from fault_log import (
    GENERATED_IDS,
    first_error_line,
    generate_config,
    lost_and_duplicated,
    record,
    sdeid,
)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def test_disk_full_during_shard_write(generator, small_disk, tmp_path):
    cfg = generate_config(generator, tmp_path, hf_batch_size=4)
    out = small_disk / "gen"
    full = sdeid("generate", "--config", cfg, "--out", out)
    assert full.returncode == 2, full.stderr[-3000:]
    message = first_error_line(full.stderr)
    assert "could not write this shard" in message and "No space left on device" in message
    assert "Traceback" not in full.stderr
    kept = _digests(out / "shards")
    assert 0 < len(kept) < 15 and not list((out / "shards").glob(".*.tmp*"))

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    again = sdeid("generate", "--config", cfg, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(kept)} shards done" in again.stdout
    after = _digests(out / "shards")
    assert all(after[name] == digest for name, digest in kept.items())  # nothing redone or lost
    ids = pq.read_table(out / "shards", columns=["doc_id"])["doc_id"].to_pylist()
    lost, dup = lost_and_duplicated(ids, GENERATED_IDS)
    assert (lost, dup) == (0, 0)
    record(
        "disk full (48 KiB tmpfs) during generate's shard writes; room made, same command",
        lost,
        dup,
        f"exit 2 `{message.removeprefix('sdeid: error: ').replace(str(tmp_path), '$TMP')}`; "
        f"{len(kept)} shards kept unchanged, rerun 60/60 once",
    )
