"""Documents -> packed blocks of token ids for causal-LM training.

Each document becomes <s> text </s>; the documents are concatenated and cut into blocks of the
context length, so no compute is spent on padding and every block is full (the last partial
block is dropped for training; for dev it is kept so every character is scored).
"""

from __future__ import annotations


def tokenize_documents(tokenizer, texts) -> list[list[int]]:
    texts = list(texts)
    if not texts:
        return []
    eos = tokenizer.eos_token_id
    return [ids + [eos] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def pack_blocks(docs: list[list[int]], context: int, keep_last: bool = False) -> list[list[int]]:
    stream = [t for doc in docs for t in doc]
    n_full = len(stream) // context
    blocks = [stream[i * context : (i + 1) * context] for i in range(n_full)]
    if keep_last and len(stream) % context > 1:
        blocks.append(stream[n_full * context :])
    return blocks
