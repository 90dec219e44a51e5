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
