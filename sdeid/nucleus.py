"""Top-p (nucleus) sampling for vLLM on CPU without sorting the whole vocabulary in float32.

On CPU, vLLM applies top-p by sorting every row of float32 logits and scattering them back;
with a small generator and 256 sequences in flight that sort was over half of the engine's
step (py-spy of the VLLM::Worker). Two facts make it cheaper here: a row's nucleus usually lies
in its few hundred most likely tokens (a `topk`, no full sort), and probabilities are
non-negative floats, whose bit patterns sort like the numbers themselves, so the rows that need
a full sort sort int32 (about 1.6x faster than float32 on this CPU).

The kept set is the nucleus of Holtzman et al.: the most likely tokens whose mass before them
is < p, plus any token tied with the least likely of them. sdeid passes `top_p=1.0` to vLLM
and the real top-p in `extra_args`, so vLLM's own sort never runs; on GPU vLLM's fused
kernels are used instead (see `generate.vllm_generate`).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

EXTRA_ARG = "sdeid_top_p"  # SamplingParams.extra_args key with a request's top-p
FIRST_K = 256  # tokens looked at before a full sort; covers ~55 % of rows of the CPU model


def nucleus_(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf, in place, the logits outside each row's nucleus; `top_p` is [rows]."""
    probs = logits.softmax(dim=-1)
    keys = probs.view(torch.int32)  # same order as probs: all are >= 0
    desc = keys.topk(min(FIRST_K, keys.shape[1]), dim=-1).values.view(torch.float32)
    floor, reached = _least_kept(desc, top_p)
    rest = reached.logical_not().nonzero().squeeze(1)
    if len(rest):
        desc = keys[rest].sort(dim=-1, descending=True).values.view(torch.float32)
        floor[rest] = _least_kept(desc, top_p[rest])[0]
    return logits.masked_fill_(probs < floor, float("-inf"))


def _least_kept(desc: torch.Tensor, top_p: torch.Tensor):
    """For rows of probabilities in descending order: the least probability in each row's
    nucleus [rows, 1], and whether the row's listed mass reaches p (where it does not, the
    nucleus may go on past the list)."""
    cum = desc.cumsum(dim=-1)
    kept = ((cum - desc) < top_p[:, None]).sum(dim=-1, keepdim=True)  # >= 1: first has 0 before
    return desc.gather(1, kept - 1), cum[:, -1] >= top_p


class NucleusLogitsProcessor(LogitsProcessor):
    """vLLM logits processor (engine arg `logits_processors=[FQCN]`) applying each request's
    `extra_args[EXTRA_ARG]` top-p with `nucleus_`. Argmax-invariant, so vLLM applies it after
    temperature and only to sampled rows, where its own top-p would run."""

    FQCN = f"{__name__}:NucleusLogitsProcessor"

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.top_p: dict[int, float] = {}  # batch row -> top-p, for rows with top-p < 1

    @classmethod
    def validate_params(cls, sampling_params):
        p = _requested(sampling_params)
        if p is not None and not 0 < p < 1:
            raise ValueError(f"extra_args[{EXTRA_ARG!r}] must be in (0, 1], got {p}")

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None):
        process_dict_updates(self.top_p, batch_update, lambda params, _, __: _requested(params))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        rows = torch.tensor(list(self.top_p))
        top_p = torch.tensor(list(self.top_p.values()), dtype=torch.float32)
        if len(rows) == len(logits):  # every row: mask in place, no gather
            order = torch.empty_like(top_p).scatter_(0, rows, top_p)
            return nucleus_(logits, order)
        logits[rows] = nucleus_(logits[rows], top_p)
        return logits


def _requested(params) -> float | None:
    """A request's top-p from its extra_args, None where it has none or it is 1."""
    p = (params.extra_args or {}).get(EXTRA_ARG)
    return None if p is None or p == 1 else float(p)
