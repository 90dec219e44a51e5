"""A cheap source of many distinct notes for the stages after generation (benchmarks only).

NOT generated text: each note is 12 sentences drawn from MEDDOCAN train, in a random order,
with every PHI value in them replaced by a fresh one of the same shape (letters by random
syllables, digits by random digits), so notes are distinct, of real length (about 1.5k
characters) and carry gold spans at the right offsets. One note in a hundred repeats a note a
shard earlier exactly, and one in a hundred repeats it with its last sentence changed, so the
clean-up's exact and near-duplicate rules have work across shards. Note i depends only on
(seed, i): any shard can be made by any worker, in any order.

    from scale_notes import write_notes   # benchmarks/, beside this file
    write_notes("runs/bench-scale/notes-10k", 10_000)
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from sdeid.schema import Note, Span

MEDDOCAN_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "meddocan" / "train"
SENTENCES_PER_NOTE = 12
SYLLABLES = ["ma", "ri", "lo", "pe", "san", "tos", "gar", "cia", "fer", "nan", "dez", "ro", "su"]
DUPLICATE, NEAR_DUPLICATE = 0.01, 0.01


def sentences(corpus=MEDDOCAN_TRAIN) -> list[tuple[str, tuple]]:
    """[(sentence, ((start, end, label), ...))] from the corpus, spans relative to the sentence;
    a sentence is a line cut at ". ", and one a span would cross is left out."""
    from sdeid.corpus_io import read_corpus

    out = []
    for note in read_corpus(str(corpus), allow_overlap=True):
        for m in re.finditer(r"[^\n]+?(?:\. |\n|$)", note.text):
            start, end = m.start(), m.end()
            text = note.text[start:end].rstrip()
            if len(text) < 20:
                continue
            spans, crossed = [], False
            for s in note.spans:
                if s.start >= start and s.end <= start + len(text):
                    spans.append((s.start - start, s.end - start, s.label))
                elif s.start < end and s.end > start:
                    crossed = True
            if not crossed:
                out.append((text, tuple(spans)))
    return out


def _fresh(value: str, rng: random.Random) -> str:
    """A new value of the same shape: digits stay digits, words stay capitalized words."""
    out = []
    for word in re.split(r"(\W+)", value):
        if not word or not word.isalnum():
            out.append(word)
        elif word.isdigit():
            out.append("".join(rng.choice("0123456789") for _ in word))
        else:
            new = "".join(rng.choice(SYLLABLES) for _ in range(max(1, len(word) // 3)))
            out.append(new.capitalize() if word[0].isupper() else new)
    return "".join(out)


def make_note(i: int, pool: list, seed: int = 0, notes_per_shard: int = 1000) -> Note:
    rng = random.Random(f"{seed}/{i}")
    kind = rng.random()
    if i >= notes_per_shard and kind < DUPLICATE + NEAR_DUPLICATE:
        earlier = make_note(i - notes_per_shard, pool, seed, notes_per_shard)
        if kind < DUPLICATE:
            return Note(f"scale-{i:09d}", earlier.text, earlier.spans, source="scale-notes")
        # The same note with its last sentence swapped for another: a near duplicate.
        cut = earlier.text.rstrip().rfind("\n")
        text = earlier.text[: cut + 1] + pool[rng.randrange(len(pool))][0]
        spans = [s for s in earlier.spans if s.end <= cut]
        return Note(f"scale-{i:09d}", text, spans, source="scale-notes")
    parts, spans, at = [], [], 0
    for _ in range(SENTENCES_PER_NOTE):
        text, phi = pool[rng.randrange(len(pool))]
        pieces, last, shift = [], 0, 0
        for start, end, label in phi:
            new = _fresh(text[start:end], rng)
            pieces += [text[last:start], new]
            spans.append(Span(at + start + shift, at + start + shift + len(new), label))
            shift += len(new) - (end - start)
            last = end
        sentence = "".join(pieces) + text[last:]
        parts.append(sentence)
        at += len(sentence) + 1
    return Note(f"scale-{i:09d}", "\n".join(parts), spans, source="scale-notes")


def _write_shard(folder, index: int, start: int, stop: int, pool, seed: int, per: int) -> int:
    from sdeid.shard_store import ShardStore

    notes = [make_note(i, pool, seed, per) for i in range(start, stop)]
    ShardStore(folder).write(index, notes)
    return len(notes)


def write_notes(folder, n: int, seed: int = 0, notes_per_shard: int = 1000) -> Path:
    """Shards of `n` scale notes in `folder` (one task per shard on Ray when it is running)."""
    from sdeid.shard_store import ShardStore
    from sdeid.tasks import shared, task_runner

    store = ShardStore(folder)
    store.create()
    if sum(m["rows"] for m in store.done().values()) == n:
        return store.folder  # made before, same size: notes depend only on (seed, i)
    pool = sentences()
    ref = shared(pool)
    calls = [
        (str(folder), k, a, min(a + notes_per_shard, n), ref, seed, notes_per_shard)
        for k, a in enumerate(range(0, n, notes_per_shard))
    ]
    task_runner()(_write_shard, calls)
    return store.folder
