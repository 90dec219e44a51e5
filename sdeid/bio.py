"""Character spans <-> word-level BIO labels on subword windows.

The fast tokenizer gives every subword its character offsets and the pre-tokenized word it
belongs to. A word is labelled B-X when it starts span X, I-X when it continues it, O otherwise;
the model learns (and predicts) that label on the word's first subword. Decoding joins words
back into character spans from the first word's start to the last word's end, so spans never
end inside a word. Long documents are cut into overlapping windows of subwords; each word is
read from the window where its first subword has the most context on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdeid.schema import Span

IGNORE = -100  # label id the loss skips (continuation subwords, special tokens)


@dataclass
class DocEncoding:
    input_ids: list[int]  # subwords of the whole document, no special tokens
    word_of_token: list[int]  # index of the word each subword belongs to
    words: list[tuple[int, int]]  # character [start, end) of each word
    first_token: list[int]  # index of each word's first subword


def bio_label_names(labels) -> list[str]:
    return ["O"] + [f"{p}-{lab}" for lab in labels for p in ("B", "I")]


def encode_document(tokenizer, text: str) -> DocEncoding:
    return encode_documents(tokenizer, [text])[0]


def encode_documents(tokenizer, texts: list[str]) -> list[DocEncoding]:
    # Whole documents, in one call (the fast tokenizer encodes a batch in Rust, in parallel
    # where it may); transformers warns once that a document exceeds the model's length, and
    # windows() cuts it to size later.
    batch = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [_document(e.ids, e.word_ids, e.offsets) for e in batch.encodings]


def _document(input_ids, word_ids, offsets) -> DocEncoding:
    words, first_token, word_of_token = [], [], []
    last_word = None
    for i, (wid, (s, e)) in enumerate(zip(word_ids, offsets, strict=True)):
        if wid != last_word:
            words.append([s, e])
            first_token.append(i)
            last_word = wid
        else:
            words[-1][1] = max(words[-1][1], e)
        word_of_token.append(len(words) - 1)
    return DocEncoding(list(input_ids), word_of_token, [tuple(w) for w in words], first_token)


def word_labels_from_spans(doc: DocEncoding, spans) -> list[str]:
    """One BIO tag per word: a word belongs to a span when their characters overlap."""
    tags = ["O"] * len(doc.words)
    ordered = sorted(spans)
    j = 0
    for w, (ws, we) in enumerate(doc.words):
        while j < len(ordered) and ordered[j].end <= ws:
            j += 1
        if j < len(ordered) and ordered[j].start < we:
            span = ordered[j]
            starts = w == 0 or tags[w - 1] == "O" or doc.words[w - 1][1] <= span.start
            tags[w] = ("B-" if starts else "I-") + span.label
    return tags


def spans_from_word_labels(doc: DocEncoding, tags, scores=None, text=None) -> list[Span]:
    """Join words into spans; an I-X that does not follow X starts a new span (lenient BIO).
    Given the text, a span also ends at a line break: a gold span never crosses one (BRAT's
    one-line surface field cannot hold it), so a prediction that does joins two entities."""
    spans = []
    cur = None  # [start, end, label, score list]
    for w, tag in enumerate(tags):
        label = None if tag == "O" else tag[2:]
        new_line = cur is not None and text is not None and "\n" in text[cur[1] : doc.words[w][0]]
        if cur is not None and (label != cur[2] or tag.startswith("B-") or new_line):
            spans.append(cur)
            cur = None
        if label is not None:
            score = scores[w] if scores is not None else None
            if cur is None:
                cur = [doc.words[w][0], doc.words[w][1], label, [score]]
            else:
                cur[1] = doc.words[w][1]
                cur[3].append(score)
    if cur is not None:
        spans.append(cur)
    return [Span(s, e, lab, None if sc[0] is None else float(min(sc))) for s, e, lab, sc in spans]


def windows(n_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges of at most `size` covering [0, n_tokens), consecutive ones sharing
    `stride` tokens. An empty document still gets one (empty) window."""
    if size <= stride:
        raise ValueError(f"window size {size} must exceed stride {stride}")
    out, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        out.append((start, end))
        if end >= n_tokens:
            return out
        start = end - stride


def best_window_for_words(doc: DocEncoding, wins) -> list[tuple[int, int]]:
    """For each word: (window index, position of its first subword in that window), choosing
    the window in which that subword is farthest from an edge."""
    best, first = [], 0
    for t in doc.first_token:  # ascending, and windows are in order: walk them once
        while first < len(wins) and wins[first][1] <= t:
            first += 1
        choice, margin = None, -1
        k = first
        while k < len(wins) and wins[k][0] <= t:
            s, e = wins[k]
            m = min(t - s, e - 1 - t)
            if m > margin:
                choice, margin = (k, t - s), m
            k += 1
        best.append(choice)
    return best


def training_examples(doc: DocEncoding, tags, label_ids, cls_id, sep_id, size, stride):
    """(input_ids, labels) per window, with [CLS]/[SEP] and the loss only on first subwords."""
    first_of = {t: w for w, t in enumerate(doc.first_token)}
    out = []
    for s, e in windows(len(doc.input_ids), size - 2, stride):
        ids = [cls_id] + doc.input_ids[s:e] + [sep_id]
        labs = (
            [IGNORE]
            + [label_ids[tags[first_of[t]]] if t in first_of else IGNORE for t in range(s, e)]
            + [IGNORE]
        )
        out.append((ids, labs))
    return out
