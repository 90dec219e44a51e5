"""A folder of numbered Parquet shards that a crashed job can finish without redoing work.

A shard is written under a temporary name, renamed when complete, and then recorded as done by
a small marker (`_done/shard-00007.json`) holding its row count and sha256. A shard counts as
done only when both exist and agree; anything else (a stray temporary, a shard without its
marker) is redone. Readers check the checksum, so a shard damaged after it was written is
refused with a message instead of being read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sdeid.schema import NoteError


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ShardStore:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.done_dir = self.folder / "_done"

    def done(self) -> dict[int, dict]:
        """{shard index: marker} for every shard whose file and marker both exist."""
        out = {}
        if not self.done_dir.is_dir():
            return out
        for marker in sorted(self.done_dir.glob("shard-*.json")):
            index = int(marker.stem.split("-")[1])
            if (self.folder / shard_name(index)).is_file():
                out[index] = json.loads(marker.read_text())
        return out

    def write(self, index: int, notes, extra_columns: dict | None = None) -> Path:
        from sdeid.parquet_io import write_notes_parquet

        path = self.folder / shard_name(index)
        tmp = self.done_dir / f".{path.stem}.json.tmp"
        try:
            self.done_dir.mkdir(parents=True, exist_ok=True)
            write_notes_parquet(notes, str(path), extra_columns)
            record = {"rows": len(notes), "sha256": sha256_file(path)}
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.done_dir / f"{path.stem}.json")
        except OSError as e:
            # A full disk or a lost mount: the shard has no marker, so it counts as not done;
            # the shards finished before it are untouched.
            tmp.unlink(missing_ok=True)
            raise NoteError(
                f"{path}: could not write this shard ({e}); the {len(self.done())} shards "
                "finished before it are kept: rerun the same command when the disk has room"
            ) from e
        return path

    def verify_all(self) -> None:
        """Refuse the folder if a shard lacks its marker or does not match its checksum: the
        check a downstream stage makes before it reads a stage's shards."""
        done = self.done()
        for path in sorted(self.folder.glob("shard-*.parquet")):
            if int(path.stem.split("-")[1]) not in done:
                raise NoteError(
                    f"{path}: no _done marker (the stage that writes it did not finish it); "
                    "rerun that stage"
                )
        for index, marker in sorted(done.items()):
            self.verify(index, marker)

    def verify(self, index: int, marker: dict) -> Path:
        path = self.folder / shard_name(index)
        if sha256_file(path) != marker["sha256"]:
            raise NoteError(_damaged(path))
        return path

    def read(self, index: int, marker: dict, columns=None):
        """One done shard as an Arrow table, its bytes read once for checksum and Parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.folder / shard_name(index)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != marker["sha256"]:
            raise NoteError(_damaged(path))
        return pq.read_table(pa.BufferReader(data), columns=columns)

    def read_table(self, columns=None):
        """All done shards as one Arrow table, in shard order, checksums verified."""
        import pyarrow as pa

        tables = [self.read(i, m, columns) for i, m in sorted(self.done().items())]
        if not tables:
            raise NoteError(f"{self.folder}: no completed shards")
        return pa.concat_tables(tables)

    def clear_temporaries(self) -> None:
        for p in self.folder.glob(".*.tmp-*"):
            p.unlink()


def _damaged(path) -> str:
    return (
        f"{path}: checksum does not match its _done marker (the shard was changed or damaged "
        "after it was written); delete it and its marker to regenerate it"
    )
