"""Prompt-lookup proposals (vLLM's "ngram" method): find the latest earlier occurrence of the
context's last n tokens, longest n first (`lookup_max` down to `lookup_min`), and propose the
tokens that followed it. No model runs; it pays when the output repeats the input (editing,
summarising, code, answers quoting a passage)."""

from dataclasses import dataclass

from tyllm.errors import TyllmError


@dataclass(frozen=True)
class Ngram:
    tokens: int | None = None  # K proposed per step; None: the tree's speculative_tokens
    lookup_max: int = 4
    lookup_min: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.lookup_min <= self.lookup_max:
            raise TyllmError(f"Ngram(lookup_min={self.lookup_min}, lookup_max="
                             f"{self.lookup_max}): give 1 <= lookup_min <= lookup_max.")

    def start(self, session, prompt: list[int], slot: int) -> "NgramRun":
        return NgramRun(self)

    def check(self, session) -> None:
        """Nothing to check: the proposals are the context's own tokens."""


class NgramRun:
    def __init__(self, spec: Ngram):
        self.spec = spec

    def propose(self, context: list[int], count: int) -> list[int]:
        return lookup(context, count, self.spec.lookup_min, self.spec.lookup_max)


def lookup(context: list[int], count: int, n_min: int, n_max: int) -> list[int]:
    """Up to `count` tokens that followed the latest earlier occurrence of the context's last n
    tokens, for the largest n in [n_min, n_max] that occurs; [] when none does."""
    size = len(context)
    for n in range(min(n_max, size - 1), n_min - 1, -1):
        tail = context[size - n:]
        for start in range(size - n - 1, -1, -1):  # latest occurrence before the tail itself
            if context[start:start + n] == tail:
                return context[start + n:start + n + count]
    return []
