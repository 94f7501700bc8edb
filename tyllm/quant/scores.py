"""What an evaluation reports per model, and where it probes greedy accuracy (shared by the local
evaluation, tyllm/quant/evaluate.py, and the served one, tyllm/quant/api_eval.py)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    name: str
    perplexity: float | None  # None for a served model (the API gives no prompt logprobs)
    tokens: int
    accuracy: float | None = None  # greedy next-token accuracy at the probe positions
    probes: int = 0

    def as_json(self) -> dict:
        return {"name": self.name, "perplexity": self.perplexity, "tokens": self.tokens,
                "next_token_accuracy": self.accuracy, "probes": self.probes}


def probe_positions(block: list[int], stride: int) -> list[int]:
    """Positions i whose next token block[i + 1] is predicted from block[: i + 1]."""
    return list(range(stride - 1, len(block) - 1, stride))
