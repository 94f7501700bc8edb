"""Greedy speculative decoding on one sequence: the same tokens as plain greedy decoding.

Each step the proposer guesses up to K tokens after the context; one verify call runs the last
token and the guesses at their positions, and row j's argmax is the target's own next token
after row j. The guesses that match those argmaxes are kept, then the target's token after the
last kept one (a correction, or a bonus token when every guess was right): 1 to K + 1 tokens a
step. KV rows written for rejected guesses lie past the sequence's length and are overwritten
by the next step. A step with no guess runs the plain decode graph.

A verify step costs more than a decode step (K + 1 rows, and every row's logits), so guesses
that keep failing cost speed: after a verify step that kept no guess the next `skip` steps
decode plainly without asking the proposer, `skip` doubling up to MAX_SKIP while they keep
failing and reset by a step that keeps one (open-ended text, where n-gram guesses rarely hold,
then decodes at nearly the plain rate)."""

from dataclasses import dataclass

import torch

from tyllm.errors import TyllmError
from tyllm.runtime.logits import greedy_token

MAX_SKIP = 32


@dataclass
class Backoff:
    """How many coming steps decode without guesses after verify steps that kept none."""

    skip: int = 0
    next_skip: int = 1

    def propose_now(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def kept(self, guesses_kept: int) -> None:
        if guesses_kept:
            self.next_skip = 1
        else:
            self.skip, self.next_skip = self.next_skip, min(2 * self.next_skip, MAX_SKIP)


@dataclass
class SpeculationStats:
    """What a run proposed and kept (vLLM's spec-decode metrics under the same names)."""

    verify_steps: int = 0
    decode_steps: int = 0  # steps with no proposal (plain decode graph)
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verify step: the accepted guesses plus the target's own token."""
        return 1 + self.accepted / self.verify_steps if self.verify_steps else 0.0


def speculative_greedy(session, prompt: list[int], logits: torch.Tensor, max_new_tokens: int,
                       speculative, stop_at_eos: bool = True, slot: int = 0,
                       stats: SpeculationStats | None = None) -> list[int]:
    """Tokens after `prompt`, whose last logits are `logits`, proposed by `speculative`
    (tyllm.speculate.Ngram or DraftModel) and verified on `session`'s tree; `stats` counts
    what was proposed and kept."""
    stats = SpeculationStats() if stats is None else stats
    k = proposal_count(session, speculative)
    run, backoff = speculative.start(session, prompt, slot), Backoff()
    out = [greedy_token(logits)]
    while not done(session, out, max_new_tokens, stop_at_eos):
        context = prompt + out
        room = min(k, max_new_tokens - len(out) - 1, session.tree.max_kv - len(context))
        guesses = run.propose(context, room) if room > 0 and backoff.propose_now() else []
        position = len(context) - 1  # the last token's: its KV is not written yet
        if guesses:
            rows = session.verify_rows([[out[-1], *guesses]], [position], [slot])[0]
            kept = accepted(guesses, rows.argmax(dim=-1).tolist())
            out += kept
            backoff.kept(len(kept) - 1)
            stats.verify_steps += 1
            stats.proposed += len(guesses)
            stats.accepted += len(kept) - 1
        else:
            out.append(greedy_token(session.extend([out[-1]], position, slot)))
            stats.decode_steps += 1
    return trimmed(session, out, max_new_tokens, stop_at_eos)


def accepted(guesses: list[int], targets: list[int]) -> list[int]:
    """The guesses up to the first that differs from the target's token at its place, then the
    target's token there (targets[j]: the token after row j)."""
    kept = 0
    while kept < len(guesses) and guesses[kept] == targets[kept]:
        kept += 1
    return [*guesses[:kept], targets[kept]]


def done(session, out: list[int], max_new_tokens: int, stop_at_eos: bool) -> bool:
    return len(out) >= max_new_tokens or (stop_at_eos and not session.eos.isdisjoint(out))


def trimmed(session, out: list[int], max_new_tokens: int, stop_at_eos: bool) -> list[int]:
    """A step may pass an EOS token or the budget: cut where plain decoding would stop."""
    if stop_at_eos:
        ends = [i for i, t in enumerate(out) if t in session.eos]
        out = out[:ends[0] + 1] if ends else out
    return out[:max_new_tokens]


def proposal_count(session, speculative) -> int:
    """K: the proposer's count, at most the tree's verify width."""
    compiled = session.tree.speculative_tokens
    k = compiled if speculative.tokens is None else speculative.tokens
    session.tree.check_verify_graphs()
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= compiled:
        raise TyllmError(f"{k!r} speculative tokens asked of a tree whose verify graphs check "
                         f"at most {compiled}: ask for 1 to {compiled}, or recompile with "
                         f"speculative_tokens={k}.")
    speculative.check(session)
    return k
