"""`sdeid audit`: the index once, then one task per synthetic shard (sdeid.tasks).

Each task audits its shard's notes, writes the unflagged ones to OUT/shards (same shard number)
and their rows to OUT/audit_notes/, and returns two tallies, all notes and kept notes; the
driver adds them up into audit.json. So the driver holds the private index and the tallies,
never the synthetic notes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sdeid.audit.config import AuditConfig
from sdeid.memorization import canaries
from sdeid.memorization.job import FILE as MEMORIZATION
from sdeid.tasks import shared, task_runner


def run_audit(cfg: AuditConfig, out_dir, ray_address: str | None = None) -> dict:
    from sdeid.audit.index import PrivateIndex
    from sdeid.audit.tally import Tally
    from sdeid.config import config_to_dict
    from sdeid.corpus_io import read_corpus
    from sdeid.manifest import fingerprint_path, write_manifest
    from sdeid.shard_store import ShardStore

    out_dir = Path(out_dir)
    src = _source_store(cfg.synthetic)
    if ray_address:
        from sdeid.ray_env import init_ray

        init_ray(ray_address)
    t0 = time.time()
    # The privacy check reads every private PHI string, whatever a label map would drop.
    private = read_corpus(cfg.private, allow_overlap=True)
    planted = canaries.read(cfg.generator) if cfg.generator else []
    # The canaries were adapted on as much as the private notes were: they are private too.
    index = PrivateIndex(
        private + canaries.canary_notes(planted),
        reference_texts(cfg.reference),
        cfg.ngram_sizes,
        cfg.min_phi_chars,
        cfg.num_perm,
    )
    dst = ShardStore(out_dir / "shards")
    dst.create()
    (out_dir / "audit_notes").mkdir(exist_ok=True)
    index_ref = shared(index)
    calls = [(src.folder, i, m, index_ref, cfg, out_dir) for i, m in sorted(src.done().items())]
    before, after = Tally(), Tally()
    for shard_all, shard_kept in task_runner()(audit_shard, calls):
        before.merge(shard_all)
        after.merge(shard_kept)
    result = {
        "before_filter": before.summary(index, cfg.ngram_sizes),
        "after_filter": after.summary(index, cfg.ngram_sizes),
        "audit_s": time.time() - t0,
    }
    if cfg.generator and (Path(cfg.generator) / MEMORIZATION).is_file():
        result["memorization"] = json.loads((Path(cfg.generator) / MEMORIZATION).read_text())
    (out_dir / "audit.json").write_text(json.dumps(result, indent=2))
    write_manifest(
        out_dir,
        "audit",
        config_to_dict(cfg),
        {
            "synthetic": {"path": str(src.folder)},
            "private": {"path": cfg.private, "sha256": fingerprint_path(cfg.private)},
            **({"generator": {"path": cfg.generator}} if cfg.generator else {}),
        },
        counts={"notes": before.notes, "flagged": before.notes_flagged, "kept": after.notes},
        timings={"audit_s": result["audit_s"]},
    )
    return result


def audit_shard(folder, index: int, marker: dict, private_index, cfg, out_dir: Path):
    """Audit one shard; write its kept notes and its rows; return (all, kept) tallies."""
    import pyarrow as pa

    from sdeid.audit.notes import audit_note
    from sdeid.audit.tally import Tally
    from sdeid.parquet_io import table_to_notes
    from sdeid.shard_store import ShardStore, shard_name

    shard = ShardStore(folder).read(index, marker)
    everything, kept, rows, cache = Tally(), Tally(), [], {}
    keep = []
    for doc_id, text in zip(shard["doc_id"].to_pylist(), shard["text"].to_pylist(), strict=True):
        note = audit_note(private_index, doc_id, text, cfg, cache)
        everything.add(note)
        rows.append(note["row"])
        keep.append(not note["row"]["flagged"])
        if keep[-1]:
            kept.add(note)
    shard = shard.filter(pa.array(keep))
    notes = table_to_notes(shard, where=f"audit shard {index}", allow_overlap=True)
    extra = {
        c: shard[c].to_pylist()
        for c in shard.column_names
        if c not in ("doc_id", "text", "spans", "source", "annotator")
    }
    ShardStore(Path(out_dir) / "shards").write(index, notes, extra)
    path = Path(out_dir) / "audit_notes" / shard_name(index).replace(".parquet", ".json")
    path.write_text(json.dumps(rows))
    return everything, kept


def reference_texts(paths) -> list[str]:
    from sdeid.corpus_io import read_corpus

    texts = []
    for p in paths:
        if Path(p).is_file() and Path(p).suffix in (".txt", ".lst"):
            texts += Path(p).read_text(encoding="utf-8").splitlines()
        else:
            texts += [n.text for n in read_corpus(p, allow_overlap=True)]
    return texts


def _source_store(path: str):
    from sdeid.errors import RunFolderError
    from sdeid.shard_store import ShardStore

    p = Path(path)
    for candidate in (p / "clean", p / "shards", p):  # generate: clean/; annotate: shards/
        if ShardStore(candidate).done():
            return ShardStore(candidate)
    raise RunFolderError(f"{path}: no completed note shards to audit")
