"""Speculative decoding on the dies: a proposer guesses the next K tokens, one call of the
tree's verify graph (compiled with speculative_tokens=K) scores them all, and the longest run
the target itself would have produced is kept, plus the target's own next token.

Proposers: `Ngram` (prompt lookup: the tokens that followed the latest earlier occurrence of
the context's last n-gram) and `DraftModel` (a smaller compiled tree decoding greedily).
`Session.generate(..., speculative=Ngram(...))` runs it (greedy.py); vLLM's engine uses the
same verify step (tyllm/vllm_ext/)."""

from tyllm.speculate.draft import DraftModel
from tyllm.speculate.greedy import SpeculationStats, speculative_greedy
from tyllm.speculate.ngram import Ngram

__all__ = ["DraftModel", "Ngram", "SpeculationStats", "speculative_greedy"]
