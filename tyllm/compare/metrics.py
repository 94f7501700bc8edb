"""How far a compiled value is from HF's: cosine similarity, SQNR and max |error| (float64)."""

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Measure:
    cosine: float
    sqnr_db: float  # 10 log10(sum ref^2 / sum (got - ref)^2); inf when equal
    max_abs: float

    def as_json(self) -> dict:
        return {"cosine": self.cosine, "sqnr_db": finite(self.sqnr_db), "max_abs": self.max_abs}


def finite(value: float) -> float | None:
    """JSON has no infinity: an exact match's SQNR is written as null."""
    return None if math.isinf(value) else value


def measure(reference: torch.Tensor, got: torch.Tensor) -> Measure:
    ref, val = reference.double().flatten(), got.double().flatten()
    err = val - ref
    noise, signal = float(err.pow(2).sum()), float(ref.pow(2).sum())
    norms = float(ref.norm() * val.norm())
    cosine = float(ref @ val) / norms if norms > 0 else float(noise == 0)
    if noise == 0:
        sqnr = math.inf
    else:
        sqnr = 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    return Measure(cosine, sqnr, float(err.abs().max()) if err.numel() else 0.0)
