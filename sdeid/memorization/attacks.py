"""The figures: canary exposure, and membership inference's AUC and true-positive rate at a
low false-positive rate. Scores are "higher means more likely a member"."""

from __future__ import annotations

import math

import numpy as np


def exposure(secret_score: float, other_scores) -> dict:
    """Rank of the secret among all candidates by likelihood (1: the most likely) and its
    exposure, log2 R - log2 rank: about 1 when the secret is as likely as a median candidate,
    log2 R (the most this R can show) when it is the likeliest of all.

    `exposure_fit` reads on past that ceiling, as Carlini et al. do by fitting the candidates'
    distribution: -log2 P(a candidate scores at least the secret's score), with the candidates'
    log-likelihoods taken as normal."""
    others = np.asarray(other_scores, float)
    rank = 1 + int((others > secret_score).sum())
    r = len(others) + 1
    out = {"rank": rank, "candidates": r, "exposure": math.log2(r) - math.log2(rank)}
    if len(others) > 1 and others.std() > 0:
        out["exposure_fit"] = _normal_tail_bits((secret_score - others.mean()) / others.std())
    return out


def _normal_tail_bits(z: float) -> float:
    """-log2 P(Z >= z) for a standard normal Z, also far in the tail (where erfc is 0)."""
    tail = 0.5 * math.erfc(z / math.sqrt(2))
    if tail > 1e-300:
        return -math.log2(tail)
    # Mills ratio: P(Z >= z) ~ phi(z) / z for large z.
    return (z * z / 2 + math.log(z * math.sqrt(2 * math.pi))) / math.log(2)


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
