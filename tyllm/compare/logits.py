"""Whole generation, teacher forced: HF generates N tokens greedily; the tree is fed the prompt
and HF's tokens one position at a time through its own graphs, and its logits at every
position are held against HF's (top-1 agreement, the first divergence, NxD-style top-k
tolerances). The tree's prefill of the whole prompt is checked at its last position too, and
a tree with batch sizes decodes the generated positions in its largest batch graph, every row
checked."""

from dataclasses import dataclass

import torch

from tyllm.compare.metrics import Measure, measure
from tyllm.compare.prompts import Prompt
from tyllm.compare.thresholds import Thresholds


@dataclass(frozen=True)
class Divergence:
    position: int
    hf_token: int
    tree_token: int
    hf_top_gap: float  # HF's top-1 minus top-2 logit there: a near tie when small
    max_abs: float  # max |tree - HF| over the vocabulary there

    def as_json(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class TopK:
    """The worst position for one NxD-style tolerance: |p_tree - p_HF| at HF's top-k tokens over
    atol + rtol * p_HF (<= 1 passes)."""

    top_k: int | None
    worst_ratio: float
    position: int

    def as_json(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class LogitsCheck:
    tokens: list[int]  # prompt + HF's generated tokens
    prompt_len: int
    top1: float  # share of positions whose argmax equals HF's
    divergences: list[Divergence]
    top_k: list[TopK]
    prefill: Measure  # the tree's prefill logits at the last prompt position
    positions: list[Measure]
    thresholds: Thresholds
    batch: int  # the largest compiled batch: the generated positions decoded that many at once
    batched: list[Measure]  # per generated position, the worst of the batch's rows (batch > 1)

    @property
    def first_divergence(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def failures(self) -> list[str]:
        """Why the logits fail, one sentence each (none: they pass)."""
        t, out = self.thresholds, []
        if self.top1 < t.top1:
            out.append(f"top-1 agreement {self.top1:.3f} (threshold {t.top1})")
        real = [d for d in self.divergences if d.hf_top_gap >= t.divergence]
        if real:
            d = real[0]
            out.append(f"argmax differs at position {d.position} (HF token {d.hf_token}, tree "
                       f"{d.tree_token}; HF's top-2 gap {d.hf_top_gap:.4g} >= {t.divergence})")
        out += [f"top-{k.top_k or 'all'} probabilities off by {k.worst_ratio:.2f}x their "
                f"tolerance at position {k.position}" for k in self.top_k if k.worst_ratio > 1]
        if self.prefill.cosine < t.cosine:
            out.append(f"prefill logits cosine {self.prefill.cosine:.6f} (threshold {t.cosine})")
        if self.batched and (worst := min(m.cosine for m in self.batched)) < t.cosine:
            out.append(f"batch-{self.batch} decode logits cosine {worst:.6f} (threshold "
                       f"{t.cosine})")
        return out

    def as_json(self) -> dict:
        return {"tokens": self.tokens, "prompt_len": self.prompt_len, "top1": self.top1,
                "divergences": [d.as_json() for d in self.divergences],
                "top_k": [k.as_json() for k in self.top_k], "prefill": self.prefill.as_json(),
                "positions": [m.as_json() for m in self.positions], "batch": self.batch,
                "batched": [m.as_json() for m in self.batched], "passed": not self.failures()}


def hf_logits(model, prompt: Prompt, new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """HF's greedy tokens after the prompt, and its logits at every position [P + N, V]."""
    ids = prompt.ids
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=new_tokens,
                             do_sample=False, min_new_tokens=new_tokens, pad_token_id=0,
                             **prompt.hf_extra(ids))
        tokens = out[0].tolist()[:len(ids) + new_tokens]
        logits = model(input_ids=torch.tensor([tokens]), use_cache=False,
                       **prompt.hf_extra(tokens)).logits[0].float()
    return tokens, logits


def tree_logits(session, tokens: list[int], prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """The tree's prefill logits of the prompt, then its logits at every position, fed one
    token at a time (the decode graph over every KV window the positions reach)."""
    prefill = session.extend(prompt.ids, 0, slot=0)
    rows = [session.extend([t], i, slot=0) for i, t in enumerate(tokens)]
    return prefill, torch.stack(rows)


def batched_logits(session, tokens: list[int], prompt: Prompt, batch: int) -> list[torch.Tensor]:
    """The generated positions decoded by the batch-`batch` graph: the prompt prefilled into
    `batch` slots, then each of HF's tokens given to every slot at once; [batch, V] each."""
    slots, prompt_len = list(range(batch)), len(prompt.ids)
    for slot in slots:
        if prompt.prepare is not None:
            prompt.prepare(slot)
        session.extend(tokens[:prompt_len - 1], 0, slot=slot)
    return [session.decode_rows([tokens[i]] * batch, [i] * batch, slots)
            for i in range(prompt_len - 1, len(tokens))]


def divergences(hf: torch.Tensor, tree: torch.Tensor) -> list[Divergence]:
    out = []
    for i in torch.nonzero(hf.argmax(-1) != tree.argmax(-1)).flatten().tolist():
        top = hf[i].topk(2).values
        out.append(Divergence(i, int(hf[i].argmax()), int(tree[i].argmax()),
                              float(top[0] - top[1]), float((tree[i] - hf[i]).abs().max())))
    return out


def top_k_checks(hf: torch.Tensor, tree: torch.Tensor, tolerances) -> list[TopK]:
    """Per tolerance (k, atol, rtol): at HF's top-k tokens of each position, the tree's
    next-token probabilities against HF's (|p - p_HF| <= atol + rtol * p_HF); probabilities,
    not raw logits, so the long tail of near-zero logits does not decide."""
    p_hf, p_tree = hf.double().softmax(-1), tree.double().softmax(-1)
    out = []
    for k, atol, rtol in tolerances:
        index = hf.topk(min(k or hf.shape[-1], hf.shape[-1]), dim=-1).indices
        want, got = p_hf.gather(-1, index), p_tree.gather(-1, index)
        ratio = ((got - want).abs() / (atol + rtol * want.abs())).amax(-1)
        out.append(TopK(k, float(ratio.max()), int(ratio.argmax())))
    return out


def check_logits(model, session, prompt: Prompt, new_tokens: int,
                 thresholds: Thresholds) -> LogitsCheck:
    """`session`: the tree loaded (a VLM's with the prompt prepared in slot 0)."""
    tokens, hf = hf_logits(model, prompt, new_tokens)
    prefill, tree = tree_logits(session, tokens, prompt)
    agree = float((hf.argmax(-1) == tree.argmax(-1)).float().mean())
    batch, batched, p = max(session.tree.batch_sizes), [], len(prompt.ids)
    if batch > 1 and p > 1:
        for i, rows in enumerate(batched_logits(session, tokens, prompt, batch), p - 1):
            batched.append(min((measure(hf[i], row) for row in rows), key=lambda m: m.cosine))
    return LogitsCheck(tokens, p, agree, divergences(hf, tree),
                       top_k_checks(hf, tree, thresholds.logit_tolerances),
                       measure(hf[p - 1], prefill),
                       [measure(hf[i], tree[i]) for i in range(len(tokens))], thresholds,
                       batch, batched)
