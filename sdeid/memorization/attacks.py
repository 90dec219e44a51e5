"""The figures: canary exposure, and membership inference's AUC and true-positive rate at a
low false-positive rate. Scores are "higher means more likely a member"."""

from __future__ import annotations

import math

import numpy as np


def exposure(secret_score: float, other_scores) -> dict:
    """Rank of the secret among all candidates by likelihood (1: the most likely) and its
    exposure, log2 R - log2 rank: 0 when the secret is no likelier than a random candidate's
    median, log2 R when it is the likeliest of all R."""
    others = np.asarray(other_scores)
    rank = 1 + int((others > secret_score).sum())
    r = len(others) + 1
    return {"rank": rank, "candidates": r, "exposure": math.log2(r) - math.log2(rank)}


def auc(members, non_members) -> float:
    """P(a member scores above a non-member), ties counted half (Mann-Whitney U / n1 n0)."""
    m, n = np.asarray(members, float), np.asarray(non_members, float)
    both = np.concatenate([m, n])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks over ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[: len(m)].sum() - len(m) * (len(m) + 1) / 2
    return float(u / (len(m) * len(n)))


def tpr_at_fpr(members, non_members, fpr: float = 0.01) -> float:
    """Share of members above the threshold that lets at most `fpr` of non-members through."""
    m, n = np.asarray(members, float), np.sort(np.asarray(non_members, float))[::-1]
    allowed = int(math.floor(fpr * len(n)))
    threshold = n[allowed] if allowed < len(n) else -np.inf
    return float((m > threshold).mean())


def membership(members, non_members) -> dict:
    """AUC and TPR at 1 % FPR; None where a side is empty (no adaptation: no members)."""
    both = len(members) > 0 and len(non_members) > 0
    return {
        "auc": auc(members, non_members) if both else None,
        "tpr_at_1pct_fpr": tpr_at_fpr(members, non_members, 0.01) if both else None,
        "members": len(members),
        "non_members": len(non_members),
    }
