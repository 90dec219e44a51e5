"""A folder of numbered Parquet shards that a crashed job can finish without redoing work.

A shard is complete only when its data file and its marker (`_done/shard-00007.json`, holding
the row count and sha256) both exist and agree; anything else (a stray temporary, a shard
without its marker) is redone. The marker is always written last, so whatever a crash leaves
reads as "not done". Readers check the checksum, so a shard damaged after it was written is
refused with a message instead of being read.

The folder is a local path or a URI on any pyarrow filesystem (`s3://bucket/run/shards`,
`gs://...`, `hdfs://...`), so the worker that makes a shard writes it to shared storage itself.
Where the filesystem renames atomically (local disks and NFS), each file is written under a
temporary name and renamed; an object store has no rename (S3's "move" is a copy and a delete),
but its PUT is atomic, so there each file is written under its final name and the marker-last
order alone keeps a half-written shard from counting.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from sdeid.schema import NoteError

RENAMING = ("local", "hdfs")  # pyarrow filesystem type names whose move is an atomic rename


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def is_uri(location) -> bool:
    return isinstance(location, str) and "://" in location


class ShardStore:
    def __init__(self, folder):
        from pyarrow import fs

        # What messages name: the URI as given, or the local path.
        self.folder = folder if is_uri(folder) else Path(folder)
        if is_uri(folder):
            self.fs, self.root = fs.FileSystem.from_uri(folder)
        else:
            self.fs, self.root = fs.LocalFileSystem(), str(Path(folder).absolute())
        self.renames = self.fs.type_name in RENAMING
        self._created = False

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def create(self) -> None:
        """Make the folder (and its `_done/`) and drop temporaries a crashed writer left."""
        self.fs.create_dir(self._path("_done"), recursive=True)
        self.clear_temporaries()

    def _listing(self, sub: str = "") -> list:
        from pyarrow import fs

        selector = fs.FileSelector(self._path(sub) if sub else self.root, allow_not_found=True)
        return [f for f in self.fs.get_file_info(selector) if f.type == fs.FileType.File]

    def done(self) -> dict[int, dict]:
        """{shard index: marker} for every shard whose file and marker both exist."""
        shards = {f.base_name for f in self._listing()}
        out = {}
        for marker in sorted(self._listing("_done"), key=lambda f: f.base_name):
            name = marker.base_name
            if not (name.startswith("shard-") and name.endswith(".json")):
                continue
            index = int(name.removesuffix(".json").split("-")[1])
            if shard_name(index) in shards:
                out[index] = json.loads(self._read_bytes(marker.path))
        return out

    def write(self, index: int, notes, extra_columns: dict | None = None) -> str:
        """Validate `notes` and write them as shard `index`, then its marker."""
        from sdeid.parquet_io import notes_to_table
        from sdeid.schema import validate_note

        for note in notes:
            validate_note(note, allow_overlap=True)
        return self.write_table(index, notes_to_table(notes, extra_columns))

    def write_table(self, index: int, table) -> str:
        """Write an Arrow table of notes (already validated) as shard `index`, then its marker."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        record = {"rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}
        try:
            if not self._created:
                self.fs.create_dir(self._path("_done"), recursive=True)
                self._created = True
            self._put(shard_name(index), data)
            self._put(f"_done/shard-{index:05d}.json", json.dumps(record).encode())
        except OSError as e:
            # A full disk or a lost mount: the shard has no marker, so it counts as not done;
            # the shards finished before it are untouched.
            raise NoteError(
                f"{self.folder}/{shard_name(index)}: could not write this shard ({e}); the "
                f"{len(self.done())} shards finished before it are kept: rerun the same command "
                "when the disk has room"
            ) from e
        return self._path(shard_name(index))

    def _put(self, name: str, data: bytes) -> None:
        final = self._path(name)
        if not self.renames:
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return
        head, _, base = final.rpartition("/")
        tmp = f"{head}/.{base}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, final)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise

    def _read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def verify_all(self) -> None:
        """Refuse the folder if a shard lacks its marker or does not match its checksum: the
        check a downstream stage makes before it reads a stage's shards."""
        for index, marker in sorted(self.complete().items()):
            self.read(index, marker, columns=[])

    def complete(self) -> dict[int, dict]:
        """done(), or NoteError naming a shard without a marker (from the listing alone)."""
        done = self.done()
        for f in sorted(self._listing(), key=lambda f: f.base_name):
            name = f.base_name
            if name.startswith("shard-") and name.endswith(".parquet"):
                if int(name.removesuffix(".parquet").split("-")[1]) not in done:
                    raise NoteError(
                        f"{self.folder}/{name}: no _done marker (the stage that writes it did "
                        "not finish it); rerun that stage"
                    )
        return done

    def read(self, index: int, marker: dict, columns=None):
        """One done shard as an Arrow table, its bytes read once for checksum and Parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self._read_bytes(self._path(shard_name(index)))
        if hashlib.sha256(data).hexdigest() != marker["sha256"]:
            raise NoteError(
                f"{self.folder}/{shard_name(index)}: checksum does not match its _done marker "
                "(the shard was changed or damaged after it was written); delete it and its "
                "marker to regenerate it"
            )
        return pq.read_table(pa.BufferReader(data), columns=columns)

    def read_table(self, columns=None):
        """All done shards as one Arrow table, in shard order, checksums verified."""
        import pyarrow as pa

        tables = [self.read(i, m, columns) for i, m in sorted(self.done().items())]
        if not tables:
            raise NoteError(f"{self.folder}: no completed shards")
        return pa.concat_tables(tables)

    def clear_temporaries(self) -> None:
        for sub in ("", "_done"):
            for f in self._listing(sub):
                if f.base_name.startswith(".") and ".tmp-" in f.base_name:
                    self.fs.delete_file(f.path)
