"""ShardStore on a local folder and on an object store (S3 protocol, moto's server in-process):
a shard counts as done only with its marker, written last; damage is refused by name."""

from __future__ import annotations

import socket

import pytest

from sdeid.schema import Note, NoteError, Span
from sdeid.shard_store import ShardStore


def _notes(k: int, n: int = 3):
    return [
        Note(f"s{k}-n{i}", f"Paciente {i} en Madrid.", [Span(15, 21, "TERRITORIO")])
        for i in range(n)
    ]


@pytest.fixture
def s3_folder(monkeypatch):
    """An `s3://` URI on a real S3 server (moto) listening on loopback."""
    pytest.importorskip("moto", reason="moto (a dev extra) serves S3 on loopback")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from pyarrow import fs

    endpoint = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    ).create_dir("run")
    yield f"s3://run/gen/shards?{endpoint}"
    server.stop()


def _names(store) -> list[str]:
    return sorted(f.base_name for f in store._listing()) + sorted(
        "_done/" + f.base_name for f in store._listing("_done")
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_shard_is_done_only_with_its_marker(where, tmp_path, request):
    folder = str(tmp_path / "shards") if where == "local" else request.getfixturevalue("s3_folder")
    store = ShardStore(folder)
    assert store.renames == (where == "local")  # an object store has no atomic rename
    store.create()
    assert store.done() == {}
    store.write(0, _notes(0))
    store.write(2, _notes(2, 5))
    assert sorted(store.done()) == [0, 2] and store.done()[2]["rows"] == 5
    # No temporaries are left behind, on either kind of filesystem.
    assert _names(store) == [
        "shard-00000.parquet",
        "shard-00002.parquet",
        "_done/shard-00000.json",
        "_done/shard-00002.json",
    ]
    table = store.read_table()
    assert table["doc_id"].to_pylist()[:4] == ["s0-n0", "s0-n1", "s0-n2", "s2-n0"]
    assert table["spans"].to_pylist()[0][0]["label"] == "TERRITORIO"

    # A crash after the data file but before its marker: not done, and redone on the next write.
    with store.fs.open_output_stream(store._path("shard-00001.parquet")) as f:
        f.write(b"half a shard")
    assert sorted(store.done()) == [0, 2]
    with pytest.raises(NoteError, match=r"shard-00001.parquet: no _done marker"):
        store.verify_all()
    store.write(1, _notes(1))
    store.verify_all()
    assert sorted(store.done()) == [0, 1, 2]

    # Damage after the marker is refused by name, never read.
    with store.fs.open_output_stream(store._path("shard-00002.parquet")) as f:
        f.write(b"not the shard that was written")
    with pytest.raises(NoteError, match=r"shard-00002.parquet: checksum does not match"):
        store.read_table()


def test_a_crashed_local_write_leaves_no_temporary(tmp_path):
    store = ShardStore(tmp_path / "shards")
    store.create()
    (tmp_path / "shards" / ".shard-00000.parquet.tmp-dead").write_bytes(b"x")
    store.create()  # a restarted job clears what a crashed one left
    assert list((tmp_path / "shards").iterdir()) == [tmp_path / "shards" / "_done"]
