"""What to generate: prompts, samples per prompt, and a deterministic id and seed for each note.

A note's id and seed are pure functions of (run seed, prompt id, sample index), so a rerun, or a
rerun of only the missing shards after a crash, produces the same ids and asks the engine for
the same random streams. Rows are cut into fixed shards in plan order: shard k holds rows
[k * notes_per_shard, (k + 1) * notes_per_shard).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sdeid.errors import SdeidError


@dataclass(frozen=True)
class PromptRow:
    note_id: str
    prompt_id: str
    prompt: str
    sample_index: int
    seed: int
    shard: int


def first_words(text: str, k: int) -> str:
    """The first k whitespace-separated words (a leading byte-order mark is not a word)."""
    return " ".join(text.lstrip("\ufeff").split()[:k])


def note_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def build_plan(
    prompts: list[tuple[str, str]], samples_per_prompt: int, run_seed: int, notes_per_shard: int
) -> list[PromptRow]:
    """`prompts` is [(prompt_id, prompt text)], in a stable order."""
    ids = [p for p, _ in prompts]
    if len(set(ids)) != len(ids):
        dup = next(p for p in ids if ids.count(p) > 1)
        raise SdeidError(f"prompt id {dup!r} occurs more than once")
    rows = []
    for prompt_id, prompt in prompts:
        for s in range(samples_per_prompt):
            i = len(rows)
            rows.append(
                PromptRow(
                    f"{prompt_id}-s{s:04d}",
                    prompt_id,
                    prompt,
                    s,
                    note_seed(run_seed, prompt_id, s),
                    i // notes_per_shard,
                )
            )
    return rows


def prompts_from_corpus(notes, k: int) -> list[tuple[str, str]]:
    return [(n.doc_id, first_words(n.text, k)) for n in notes]


def prompts_from_file(path) -> list[tuple[str, str]]:
    """One prompt per line; blank lines are an error (use `unconditional` for empty prompts)."""
    from pathlib import Path

    lines = Path(path).read_text(encoding="utf-8").removesuffix("\n").split("\n")
    out = []
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            raise SdeidError(f"{path}:{lineno}: empty prompt line")
        out.append((f"p{lineno:06d}", line))
    if not out:
        raise SdeidError(f"{path}: no prompts")
    return out
