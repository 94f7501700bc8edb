"""Draft-model proposals: a smaller compiled tree with the target's vocabulary decodes K tokens
greedily. Its KV slot follows the accepted context: a step feeds it only the tokens it has not
seen (the target's correction and what it never computed), then K - 1 decode steps."""

from dataclasses import dataclass

from tyllm.errors import TyllmError


@dataclass
class DraftModel:
    session: object  # the draft tree's Session (tyllm.runtime.load)
    tokens: int | None = None  # K proposed per step; None: the target tree's speculative_tokens

    def check(self, target) -> None:
        draft_vocab = self.session.tree.config["vocab_size"]
        target_vocab = target.tree.config["vocab_size"]
        if draft_vocab != target_vocab:
            raise TyllmError(f"The draft tree {self.session.tree.root} has a vocabulary of "
                             f"{draft_vocab} tokens, the target {target.tree.root} one of "
                             f"{target_vocab}: a draft must share the target's tokenizer; "
                             f"compile a draft model of the same family.")

    def start(self, target, prompt: list[int], slot: int) -> "DraftRun":
        return DraftRun(self.session, slot)


class DraftRun:
    def __init__(self, session, slot: int):
        self.session, self.slot = session, slot
        self.seen: list[int] = []  # the tokens whose KV the draft's slot holds, in order

    def propose(self, context: list[int], count: int) -> list[int]:
        room = self.session.tree.max_kv - len(context)
        count = min(count, room)
        if count < 1:
            return []
        keep = shared_length(self.seen, context)
        logits = self.session.extend(context[keep:], keep, self.slot)
        proposals = []
        for i in range(count):
            proposals.append(int(logits.argmax()))
            if i < count - 1:
                logits = self.session.extend([proposals[-1]], len(context) + i, self.slot)
        self.seen = context + proposals[:-1]
        return proposals


def shared_length(seen: list[int], context: list[int]) -> int:
    """How many leading tokens the draft's KV holds that the context still has, leaving at
    least the context's last token to run (its logits start the proposals)."""
    n = 0
    for a, b in zip(seen, context, strict=False):
        if a != b:
            break
        n += 1
    return min(n, len(context) - 1)
