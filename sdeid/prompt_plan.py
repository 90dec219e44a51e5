"""What to generate: prompts, samples per prompt, and a deterministic id and seed for each note.

A note's id and seed are pure functions of (run seed, prompt id, sample index), so a rerun, or a
rerun of only the missing shards after a crash, produces the same ids and asks the engine for
the same random streams. Rows are cut into fixed shards in plan order: shard k holds rows
[k * notes_per_shard, (k + 1) * notes_per_shard). A `Plan` computes any range of rows from
those indices, so a million-note plan is the prompts and four numbers, not a million rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
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
    max_tokens: int = 0


def first_words(text: str, k: int) -> str:
    """The first k whitespace-separated words (a leading byte-order mark is not a word)."""
    return " ".join(text.lstrip("\ufeff").split()[:k])


def note_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Plan:
    """Every note of a run as arithmetic on its plan index i: sample i % samples_per_prompt of
    prompt i // samples_per_prompt, in shard i // notes_per_shard. The driver holds the
    prompts (one per held-out document or prompt line) and never a row per note; a worker
    computes the rows of any range from this object."""

    prompts: tuple[tuple[str, str], ...]
    """(prompt id, prompt text), in a stable order."""
    samples_per_prompt: int
    run_seed: int
    notes_per_shard: int
    max_tokens: tuple[int, ...] = ()
    """Per prompt: the tokens its note may add (the room its prompt leaves in the context)."""

    def __post_init__(self):
        counts = Counter(p for p, _ in self.prompts)
        dup = next((p for p, n in counts.items() if n > 1), None)
        if dup is not None:
            raise SdeidError(f"prompt id {dup!r} occurs more than once")

    @property
    def notes(self) -> int:
        return len(self.prompts) * self.samples_per_prompt

    @property
    def shards(self) -> int:
        return -(-self.notes // self.notes_per_shard)

    def shard_range(self, k: int) -> tuple[int, int]:
        return k * self.notes_per_shard, min((k + 1) * self.notes_per_shard, self.notes)

    def shard_size(self, k: int) -> int:
        """Rows in shard k (0 for a shard past the plan's end)."""
        start, stop = self.shard_range(k)
        return max(0, stop - start)

    def rows(self, start: int, stop: int) -> list[PromptRow]:
        out = []
        for i in range(start, stop):
            p, s = divmod(i, self.samples_per_prompt)
            prompt_id, prompt = self.prompts[p]
            out.append(
                PromptRow(
                    f"{prompt_id}-s{s:04d}",
                    prompt_id,
                    prompt,
                    s,
                    note_seed(self.run_seed, prompt_id, s),
                    i // self.notes_per_shard,
                    self.max_tokens[p] if self.max_tokens else 0,
                )
            )
        return out

    def pieces(self, shards, size: int) -> list[tuple[int, int]]:
        """The rows of `shards` as plan ranges of `size` rows (an engine batch). Consecutive
        shards are cut as one range: a piece cut at every shard's end would reach an engine
        as a short batch, and each costs a whole batch slot."""
        runs: list[list[int]] = []
        for k in sorted(shards):
            start, stop = self.shard_range(k)
            if runs and runs[-1][1] == start:
                runs[-1][1] = stop
            else:
                runs.append([start, stop])
        return [(a, min(a + size, stop)) for start, stop in runs for a in range(start, stop, size)]


def build_plan(
    prompts: list[tuple[str, str]], samples_per_prompt: int, run_seed: int, notes_per_shard: int
) -> list[PromptRow]:
    """Every row of a plan, for a caller that wants them all (tests, the hf backend's shards)."""
    plan = Plan(tuple(prompts), samples_per_prompt, run_seed, notes_per_shard)
    return plan.rows(0, plan.notes)


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
