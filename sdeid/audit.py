"""Privacy audit of synthetic notes against the private corpus they were made from, and the filter.

Three measures:
- word n-gram recall, n = 3..8: the share of the synthetic corpus's word n-grams (lower-cased
  `\\w+` words, every occurrence counted) that occur anywhere in the private corpus. The paper
  reports 5-gram recall (0.328 with little adaptation data, 0.122 with the most).
- verbatim PHI: every gold span surface of the private corpus with at least `min_phi_chars`
  characters, searched as a word sequence (case kept, punctuation and spacing ignored) in each
  synthetic note. A string found there that also occurs in a reference corpus (other splits, a
  public list) is *generic* ("Madrid", "40 años"); one found only in the private notes is a leak.
- each synthetic note's nearest private note by MinHash Jaccard over word 5-grams.
A note is flagged when it holds a leak or its nearest private note is at least `max_jaccard`
similar. The filter writes the unflagged notes, shard by shard, and the audit is measured again
on what it wrote. Outputs name notes by id and offset, never by their text.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class AuditConfig:
    synthetic: str
    """Synthetic note shards: an `annotate` or `generate` output folder, or a shard folder."""
    private: str
    """The private training corpus the generator was adapted to."""
    reference: tuple[str, ...] = ()
    """Corpora (BRAT or Parquet) or text files (one string per line) whose strings are public
    or not private to the training notes; a PHI string found in them is generic, not a leak."""
    min_phi_chars: int = 6
    """Shorter PHI strings (initials, "M", ages like "40") are too generic to count."""
    ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    max_jaccard: float = 0.5
    """Flag a note whose nearest private note is at least this similar (MinHash Jaccard)."""
    num_perm: int = 128

    def check(self):
        if self.min_phi_chars < 1:
            raise ValueError(f"min_phi_chars must be >= 1, got {self.min_phi_chars}")
        if not 0 < self.max_jaccard <= 1:
            raise ValueError(f"max_jaccard must be in (0, 1], got {self.max_jaccard}")
        if not self.ngram_sizes or min(self.ngram_sizes) < 1:
            raise ValueError("ngram_sizes must be positive sizes")


def ngram_recall(synthetic: list[str], private: list[str], n: int) -> float:
    """Share of the synthetic n-gram occurrences found in the private corpus."""
    seen = set()
    for text in private:
        w = WORD.findall(text.lower())
        seen.update(hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1))
    hits = total = 0
    for text in synthetic:
        w = WORD.findall(text.lower())
        for i in range(len(w) - n + 1):
            total += 1
            hits += hash(tuple(w[i : i + n])) in seen
    return hits / total if total else 0.0


def phi_strings(private_notes, min_chars: int) -> dict[tuple, dict]:
    """{word sequence: {"label", "doc_id", "chars"}} for each distinct private PHI surface."""
    out = {}
    for note in private_notes:
        for s in note.spans:
            surface = note.text[s.start : s.end]
            key = tuple(WORD.findall(surface))
            if len(surface.strip()) >= min_chars and key and key not in out:
                out[key] = {"label": s.label, "doc_id": note.doc_id, "chars": len(surface)}
    return out


def find_sequences(texts: list[str], keys) -> list[list[tuple[tuple, int]]]:
    """For each text, the (key, character offset) of every key found as a word sequence."""
    by_len: dict[int, set] = {}
    for k in keys:
        by_len.setdefault(len(k), set()).add(k)
    found = []
    for text in texts:
        matches = list(WORD.finditer(text))
        words = [m.group() for m in matches]
        hits = []
        for n, wanted in by_len.items():
            for i in range(len(words) - n + 1):
                seq = tuple(words[i : i + n])
                if seq in wanted:
                    hits.append((seq, matches[i].start()))
        found.append(hits)
    return found


def reference_texts(paths) -> list[str]:
    from sdeid.corpus_io import read_corpus

    texts = []
    for p in paths:
        if Path(p).is_file() and Path(p).suffix in (".txt", ".lst"):
            texts += Path(p).read_text(encoding="utf-8").splitlines()
        else:
            texts += [n.text for n in read_corpus(p, allow_overlap=True)]
    return texts


def nearest_private(synthetic: list[str], private: list[str], num_perm: int):
    """(index of the nearest private note, its MinHash Jaccard estimate) per synthetic note."""
    import numpy as np

    from sdeid.dedup import minhash

    priv = np.stack([minhash(t, num_perm).hashvalues for t in private])
    out = []
    for text in synthetic:
        sim = (priv == minhash(text, num_perm).hashvalues).mean(axis=1)
        j = int(sim.argmax())
        out.append((j, float(sim[j])))
    return out


def measure(cfg: AuditConfig, ids, texts, private_notes, ref_texts, phi=None) -> dict:
    """The audit of one set of synthetic notes. Returns the summary and the per-note rows."""
    phi = phi if phi is not None else phi_strings(private_notes, cfg.min_phi_chars)
    private_texts = [n.text for n in private_notes]
    found = find_sequences(texts, phi)
    found_keys = {k for hits in found for k, _ in hits}
    generic = {k for hits in find_sequences(ref_texts, found_keys) for k, _ in hits}
    nearest = nearest_private(texts, private_texts, cfg.num_perm) if texts else []
    rows = []
    for doc_id, hits, (j, sim) in zip(ids, found, nearest, strict=True):
        leaks = [(k, off) for k, off in hits if k not in generic]
        rows.append(
            {
                "doc_id": doc_id,
                "phi_found": len(hits),
                "phi_leaked": len(leaks),
                # where, and whose: offsets into the synthetic note and private doc ids only
                "leaks": [
                    {"offset": off, "label": phi[k]["label"], "private_doc": phi[k]["doc_id"]}
                    for k, off in leaks
                ],
                "nearest_private_doc": private_notes[j].doc_id,
                "nearest_jaccard": sim,
                "flagged": bool(leaks) or sim >= cfg.max_jaccard,
            }
        )
    leaked = found_keys - generic
    sims = sorted(r["nearest_jaccard"] for r in rows)
    summary = {
        "notes": len(texts),
        "ngram_recall": {str(n): ngram_recall(texts, private_texts, n) for n in cfg.ngram_sizes},
        "phi_private_strings": len(phi),
        "phi_strings_found": len(found_keys),
        "phi_strings_generic": len(found_keys & generic),
        "phi_strings_leaked": len(leaked),
        "phi_leaked_by_label": dict(Counter(phi[k]["label"] for k in leaked).most_common()),
        "phi_found_by_label": dict(Counter(phi[k]["label"] for k in found_keys).most_common()),
        "notes_with_leaks": sum(r["phi_leaked"] > 0 for r in rows),
        "nearest_jaccard": {
            "median": sims[len(sims) // 2] if sims else None,
            "p95": sims[int(len(sims) * 0.95)] if sims else None,
            "max": sims[-1] if sims else None,
        },
        "notes_flagged": sum(r["flagged"] for r in rows),
    }
    return summary, rows


def run_audit(cfg: AuditConfig, out_dir) -> dict:
    """Audit the synthetic shards, write the unflagged notes to out_dir/shards (same shard
    numbers), audit those again, and write audit.json and per-note audit_notes.json."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sdeid.config import config_to_dict
    from sdeid.corpus_io import read_corpus
    from sdeid.manifest import fingerprint_path, write_manifest
    from sdeid.parquet_io import table_to_notes
    from sdeid.shard_store import ShardStore

    out_dir = Path(out_dir)
    src = _source_store(cfg.synthetic)
    t0 = time.time()
    table = src.read_table(columns=["doc_id", "text"])
    ids, texts = table["doc_id"].to_pylist(), table["text"].to_pylist()
    private = read_corpus(cfg.private, allow_overlap=True)
    ref = reference_texts(cfg.reference)
    phi = phi_strings(private, cfg.min_phi_chars)
    before, rows = measure(cfg, ids, texts, private, ref, phi)
    flagged = [r["doc_id"] for r in rows if r["flagged"]]

    dst = ShardStore(out_dir / "shards")
    dst.folder.mkdir(parents=True, exist_ok=True)
    dst.clear_temporaries()
    drop = pa.array(flagged, type=pa.string())
    for index, marker in sorted(src.done().items()):
        shard = src.read(index, marker)
        kept = shard.filter(pc.invert(pc.is_in(shard["doc_id"], value_set=drop)))
        notes = table_to_notes(kept, where=f"audit shard {index}", allow_overlap=True)
        extra = {
            c: kept[c].to_pylist()
            for c in kept.column_names
            if c not in ("doc_id", "text", "spans", "source", "annotator")
        }
        dst.write(index, notes, extra)
    kept_table = dst.read_table(columns=["doc_id", "text"])
    after, _ = measure(
        cfg, kept_table["doc_id"].to_pylist(), kept_table["text"].to_pylist(), private, ref, phi
    )
    result = {"before_filter": before, "after_filter": after, "audit_s": time.time() - t0}
    (out_dir / "audit.json").write_text(json.dumps(result, indent=2))
    (out_dir / "audit_notes.json").write_text(json.dumps(rows))
    write_manifest(
        out_dir,
        "audit",
        config_to_dict(cfg),
        {
            "synthetic": {"path": str(src.folder)},
            "private": {"path": cfg.private, "sha256": fingerprint_path(cfg.private)},
        },
        counts={"notes": len(ids), "flagged": len(flagged), "kept": kept_table.num_rows},
        timings={"audit_s": result["audit_s"]},
    )
    return result


def _source_store(path: str):
    from sdeid.errors import RunFolderError
    from sdeid.shard_store import ShardStore

    p = Path(path)
    for candidate in (p / "clean", p / "shards", p):  # generate: clean/; annotate: shards/
        if ShardStore(candidate).done():
            return ShardStore(candidate)
    raise RunFolderError(f"{path}: no completed note shards to audit")
