"""PASS/FAIL thresholds, chosen by what the tree computes in and what it is compared with.

Per layer (every tap point on every die): cosine >= `cosine` and SQNR >= `sqnr_db`.
Teacher-forced logits: top-1 agreement >= `top1` over all positions, no divergence unless HF's
own top-2 logits there are within `divergence` (a near tie), and at each position the tree's
next-token probabilities at HF's top-k tokens within atol + rtol * p_HF (`logit_tolerances`,
NxD Inference's style: (k, atol, rtol), k None for the whole vocabulary).

Why these defaults (docs/COMPARE.md has the measurements):
- float32: a tree differs from HF only in summation order: every point of SmolLM2 and of the
  test models sits above 100 dB. 60 dB and cosine 0.99999 leave that margin and still catch a
  weight off by 0.1 %; NxD's own top-k tolerances hold with 100x to spare.
- float16 trees against HF in float32: weights and activations rounded to 11 bits cost 45-60
  dB per point and move next-token probabilities by up to ~0.01: per point cosine 0.999 and
  30 dB, NxD's relative tolerances doubled with atol 0.02, top-1 >= 0.95 (a flip only where
  HF's top-2 logits are within 0.05).
- int4 against the float checkpoint: the quantization itself (4 bits, one scale per group)
  costs 6-25 dB per point on a model of SmolLM2's size and moves probabilities by up to ~0.7,
  so per-token tolerances and divergences are not judged (`logit_tolerances` empty,
  `divergence` infinite); what is left catches a broken tree, not quantization noise. Against
  its own dequantized weights (`--model` the int4 checkpoint the tree was compiled from) an
  int4 tree is held to its activation dtype's thresholds, where a compile fault shows.
"""

import math
from dataclasses import asdict, dataclass, replace

NXD_TOPK = ((5, 1e-5, 0.01), (50, 1e-5, 0.02), (1000, 1e-5, 0.03), (None, 1e-5, 0.05))


@dataclass(frozen=True)
class Thresholds:
    name: str  # which defaults these are: float32, float16, bfloat16, int4
    cosine: float
    sqnr_db: float
    top1: float
    divergence: float
    logit_tolerances: tuple = NXD_TOPK

    def as_json(self) -> dict:
        data = asdict(self)
        data["divergence"] = None if math.isinf(self.divergence) else self.divergence
        data["logit_tolerances"] = [{"top_k": k, "atol": a, "rtol": r}
                                    for k, a, r in self.logit_tolerances]
        return data


def scaled(tolerances: tuple, atol: float, factor: float) -> tuple:
    return tuple((k, atol, rtol * factor) for k, _, rtol in tolerances)


DEFAULTS = {
    "float32": Thresholds("float32", cosine=0.99999, sqnr_db=60.0, top1=1.0, divergence=1e-3),
    "float16": Thresholds("float16", cosine=0.999, sqnr_db=30.0, top1=0.95, divergence=0.05,
                          logit_tolerances=scaled(NXD_TOPK, 0.02, 2)),
    "int4": Thresholds("int4", cosine=0.8, sqnr_db=3.0, top1=0.7, divergence=math.inf,
                       logit_tolerances=()),
}


def thresholds_for(dtype: str, same_weights: bool, **overrides) -> Thresholds:
    """The defaults for a tree computing in `dtype` on the reference's own weights; a tree
    whose weights differ from the reference's (an int4 tree against its float checkpoint) gets
    int4's. `overrides` (cosine, sqnr_db, top1, divergence) replace single values (None: keep
    the default)."""
    base = DEFAULTS.get(dtype, DEFAULTS["float16"]) if same_weights else DEFAULTS["int4"]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
