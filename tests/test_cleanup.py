"""The streaming clean-up keeps exactly the notes the one-process clean-up keeps, with the same
counts, whether its tasks run in this process or on Ray."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from sdeid.cleanup import clean_shards
from sdeid.dedup import clean_notes
from sdeid.schema import Note
from sdeid.shard_store import ShardStore

WORDS = (
    "paciente varón mujer años ingresa hospital dolor abdominal fiebre tos disnea fractura "
    "cadera tratamiento analítica normal alta domicilio control consulta semanas meses"
).split()


def _notes(n: int, seed: int = 0) -> list[Note]:
    """Notes with every rule at work: short, long, exact copies (whitespace aside), and
    near-copies that differ in a word or two, some of them chained (A ~ B ~ C)."""
    rng = random.Random(seed)
    notes = []
    for i in range(n):
        pick = rng.random()
        if pick < 0.05:
            text = "corto"
        elif pick < 0.08:
            text = "x " * 900
        elif pick < 0.25 and notes:
            text = "  ".join(rng.choice(notes).text.split())  # an exact copy
        elif pick < 0.5 and notes:
            words = rng.choice(notes).text.split()
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            text = " ".join(words)
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 80)))
        notes.append(Note(f"n{i:04d}", text, []))
    return notes


def _raw_store(tmp_path, notes, per_shard=37):
    store = ShardStore(tmp_path / "shards")
    for k in range(0, len(notes), per_shard):
        store.write(k // per_shard, notes[k : k + per_shard])
    return store


def _compare(tmp_path, threshold):
    notes = _notes(300)
    cfg = SimpleNamespace(min_chars=20, max_chars=1000, near_dup_threshold=threshold)
    kept, removed = clean_notes(
        [n.doc_id for n in notes], [n.text for n in notes], 20, 1000, threshold
    )
    counts = clean_shards(cfg, _raw_store(tmp_path, notes), tmp_path / "clean")
    clean = ShardStore(tmp_path / "clean").read_table(columns=["doc_id"])["doc_id"].to_pylist()
    assert clean == kept
    assert counts == {"notes_raw": 300, "notes_clean": len(kept), "removed": removed}
    assert not (tmp_path / "clean_work").exists()
    return removed


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.0])
def test_streaming_cleanup_keeps_what_one_process_kept(tmp_path, threshold):
    removed = _compare(tmp_path, threshold)
    assert all(removed.values()) or threshold == 0  # every rule removed something


def test_streaming_cleanup_on_ray(tmp_path, local_ray):
    _compare(tmp_path, 0.8)
