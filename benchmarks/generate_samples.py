"""Five samples and the shape of a finished `sdeid generate` run, as Markdown.

.venv/bin/python benchmarks/generate_samples.py RUN_DIR > benchmarks/results/generate_meddocan_samples.md
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path

import pyarrow.parquet as pq


def main(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    clean = pq.read_table(run_dir / "clean").to_pylist()
    counts = manifest["counts"]
    chars = [len(r["text"]) for r in clean]
    out_tokens = [r["output_tokens"] for r in clean]
    stops = sum(r["finish_reason"] == "stop" for r in clean)
    cfg = manifest["config"]
    print(f"# {counts['notes_raw']:,} synthetic MEDDOCAN notes from the adapted CPU generator\n")
    print(
        f"Config: `{Path(cfg['model']).name}` generator, prompts = first {cfg['prompt_words']} "
        f"words of each dev note, {cfg['samples_per_prompt']} samples per prompt, top-p "
        f"{cfg['top_p']}, temperature {cfg['temperature']}, up to {cfg['max_new_tokens']} new "
        f"tokens, {cfg['dtype']} vLLM engine on 2 CPU cores.\n"
    )
    print(
        f"- generated {counts['notes_raw']:,} notes, {counts['output_tokens_this_run']:,} "
        f"tokens in {counts['generate_s'] / 60:.1f} min ({counts['tokens_per_s']:.0f} tokens/s "
        "over the run, start-up included)"
    )
    print(f"- kept after clean-up: {counts['notes_clean']:,}; removed: {counts['removed']}")
    print(
        f"- kept notes: median {statistics.median(chars):.0f} characters, "
        f"{statistics.median(out_tokens):.0f} new tokens; {stops:,} ended on their own "
        f"(EOS), {len(clean) - stops:,} at the token cap\n"
    )
    for r in random.Random(0).sample(clean, 5):
        print(f'## {r["doc_id"]} (prompt: "{r["prompt"]}", {r["finish_reason"]})\n')
        print("```text\n" + r["text"].strip() + "\n```\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
