"""Fingerprints name a folder's content: sdeid's own bookkeeping in it does not change them."""

from __future__ import annotations

from sdeid.manifest import STAGE_DONE, fingerprint_path, write_manifest


def test_fingerprint_follows_content_not_bookkeeping(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "weights.bin").write_bytes(b"\x00\x01")
    before = fingerprint_path(model)

    # A stage that made this model writes its manifest and finished marker (times in both).
    write_manifest(model, "base_lm", {"preset": "tiny"}, {})
    (model / STAGE_DONE).write_text('{"stage": "base_lm", "wall_s": 5.8}')
    assert fingerprint_path(model) == before

    (model / "weights.bin").write_bytes(b"\x00\x02")
    assert fingerprint_path(model) != before
    (model / "weights.bin").write_bytes(b"\x00\x01")
    (model / "weights.bin").rename(model / "other.bin")
    assert fingerprint_path(model) != before  # names count, not only bytes


def test_a_shard_folder_is_fingerprinted_by_its_markers_and_results_are_cached(
    tmp_path, monkeypatch
):
    from conftest import toy_notes

    from sdeid.shard_store import ShardStore

    monkeypatch.setenv("SDEID_FINGERPRINT_CACHE", str(tmp_path / "cache.json"))
    store = ShardStore(tmp_path / "shards")
    store.write(0, toy_notes())
    before = fingerprint_path(store.folder)
    store.write(1, toy_notes())
    assert fingerprint_path(store.folder) != before  # a new shard brings a new marker

    # The shard's bytes are not read: its marker (with the shard's sha256) stands for it.
    shard = store.folder / "shard-00000.parquet"
    opened = []
    real_open = open
    monkeypatch.setattr(
        "builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k)
    )
    monkeypatch.setenv("SDEID_FINGERPRINT_CACHE", str(tmp_path / "other-cache.json"))
    fingerprint_path(store.folder)
    assert str(shard) not in opened and any("_done" in f for f in opened)
    opened.clear()
    fingerprint_path(store.folder)  # unchanged files: answered from the cache
    assert not [f for f in opened if "_done" in f]
