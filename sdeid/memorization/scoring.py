"""Log-likelihoods of texts under a causal LM, tokenized as adaptation tokenized them.

Texts are scored in batches of about `batch_tokens` tokens, shortest first so padding stays
small; a text longer than the context is scored in chunks, each from its own start.
"""

from __future__ import annotations

import numpy as np


def token_ids(tokenizer, texts) -> list[list[int]]:
    from sdeid.lm_data import tokenize_documents

    return tokenize_documents(tokenizer, texts)  # <s> text </s>, as in training


def logprob_sums(model, seqs: list[list[int]], context: int, batch_tokens: int = 8192):
    """(sum of log p(token | before) over each sequence's predicted tokens, their number)."""
    chunks, owner = [], []
    for i, ids in enumerate(seqs):
        for start in range(0, max(1, len(ids) - 1), context):
            piece = ids[start : start + context]
            if len(piece) > 1:
                chunks.append(piece)
                owner.append(i)
    sums, counts = np.zeros(len(seqs)), np.zeros(len(seqs), np.int64)
    order = sorted(range(len(chunks)), key=lambda j: len(chunks[j]))
    batch: list[int] = []
    for j in [*order, None]:
        # Sorted by length, so the chunk just added is the batch's widest.
        if batch and (j is None or (len(batch) + 1) * len(chunks[j]) > batch_tokens):
            width = len(chunks[batch[-1]])
            scored = _batch_logprobs(model, [chunks[k] for k in batch], width)
            for k, (total, n) in zip(batch, scored, strict=True):
                sums[owner[k]] += total
                counts[owner[k]] += n
            batch = []
        if j is not None:
            batch.append(j)
    return sums, counts


def _batch_logprobs(model, batch: list[list[int]], width: int) -> list[tuple[float, int]]:
    import torch

    device = next(model.parameters()).device
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    keep = mask[:, 1:].float()
    totals = (-(nll * keep).sum(dim=1)).tolist()
    return list(zip(totals, keep.sum(dim=1).long().tolist(), strict=True))


def load_lm(path, use_gpu: bool):
    """A causal LM for scoring: on GPU in its own dtype, on CPU in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = "auto" if use_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to("cuda" if use_gpu else "cpu").eval()
    return model, AutoTokenizer.from_pretrained(path)
