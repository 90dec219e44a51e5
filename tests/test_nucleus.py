"""sdeid's top-p for vLLM on CPU: the same nucleus as a full sort, and vLLM's batch bookkeeping."""

import pytest
import torch

pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from sdeid.nucleus import (  # noqa: E402
    EXTRA_ARG,
    FIRST_K,
    NucleusLogitsProcessor,
    nucleus_,
)


def _reference_kept(logits, top_p):
    """The nucleus from a full sort: the most likely tokens whose mass before them is < p."""
    probs = logits.softmax(dim=-1)
    desc, order = probs.sort(dim=-1, descending=True)
    before = desc.cumsum(dim=-1) - desc
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(1, order, before < top_p[:, None])


def _logits(rows, vocab, seed):
    """Rows from peaked (nucleus of a few tokens) to flat (nucleus past FIRST_K), no ties."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 12.0, rows)[:, None]
    return torch.randn(rows, vocab, generator=g, dtype=torch.float64).float() * scale


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.95])
def test_nucleus_matches_a_full_sort(p):
    logits = _logits(64, 8000, seed=int(p * 100))
    top_p = torch.full((64,), p)
    kept = _reference_kept(logits, top_p)
    sizes = kept.sum(dim=-1)
    assert sizes.min() < 20 and sizes.max() > FIRST_K or p < 0.5  # both paths taken
    out = nucleus_(logits.clone(), top_p)
    assert torch.equal(out > float("-inf"), kept)
    assert torch.equal(out[kept], logits[kept])  # kept logits untouched


def test_nucleus_keeps_every_token_tied_with_the_least_kept():
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, -2.0]])
    probs = logits.softmax(dim=-1)[0]
    p = float(probs[0] + probs[1] / 2)  # the nucleus ends inside the tie
    out = nucleus_(logits.clone(), torch.tensor([p]))
    assert (out[0, :4] == logits[0, :4]).all() and out[0, 4] == float("-inf")


def _added(index, top_p):
    params = SamplingParams(extra_args={EXTRA_ARG: top_p} if top_p is not None else None)
    return (index, params, [], [])


def test_processor_follows_vllm_batch_updates():
    proc = NucleusLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(
        BatchUpdate(
            batch_size=3,
            removed=[],
            added=[_added(0, 0.5), _added(1, None), _added(2, 0.9)],
            moved=[],
        )
    )
    logits = _logits(3, 1000, seed=1)
    out = proc.apply(logits.clone())
    assert torch.equal(out[1], logits[1])  # no top-p asked: untouched
    for row, p in ((0, 0.5), (2, 0.9)):
        assert torch.equal(
            out[row] > float("-inf"), _reference_kept(logits[row : row + 1], torch.tensor([p]))[0]
        )

    # request 0 finishes; request 2 moves into its row
    proc.update_state(
        BatchUpdate(
            batch_size=2, removed=[0], added=[], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]
        )
    )
    assert proc.top_p == {0: 0.9}
    logits = _logits(2, 1000, seed=2)
    out = proc.apply(logits.clone())
    assert torch.equal(out[0] > float("-inf"), _reference_kept(logits[:1], torch.tensor([0.9]))[0])
    assert torch.equal(out[1], logits[1])


def test_processor_rejects_a_top_p_out_of_range():
    with pytest.raises(ValueError, match=EXTRA_ARG):
        NucleusLogitsProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARG: 1.5}))
    NucleusLogitsProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARG: 1.0}))
