"""Greedy generation on emulated dies: prefill in chunks of the compiled lengths, then decode."""

import itertools
import operator
from dataclasses import dataclass

import torch

from tyllm.artifacts import layout
from tyllm.artifacts.params import load_params
from tyllm.errors import TyllmError
from tyllm.runtime.logits import greedy_token, joined_logits
from tyllm.runtime.tree import Tree

CALL_COST_ROWS = 12  # one graph call reads every weight: about the compute of 12 prompt rows


def plan_chunks(length: int, seq_lens: list[int]) -> list[tuple[int, int, int]]:
    """(start, valid rows, graph seq_len) chunks covering `length` prompt tokens at the least
    cost, a call of an M-row graph costing M + CALL_COST_ROWS rows: a 41-token prompt with
    graphs [1, 16, 128] runs as three 16-row calls, not one 128-row call three-quarters
    padding. Larger chunks first; only the last may be padded."""
    lens = sorted(set(seq_lens))
    cost, pick = [0.0] * (length + 1), [0] * (length + 1)
    for n in range(1, length + 1):  # cost[n]: the cheapest way to run n tokens
        cost[n], pick[n] = min((m + CALL_COST_ROWS + cost[max(0, n - m)], -m) for m in lens)
    sizes, n = [], length
    while n > 0:
        sizes.append(-pick[n])
        n = max(0, n - sizes[-1])
    chunks, start = [], 0
    for m in sorted(sizes, reverse=True):
        valid = min(m, length - start)
        chunks.append((start, valid, m))
        start += valid
    return chunks


def batch_calls(rows: int, sizes: list[int]) -> list[tuple[int, int, int]]:
    """(first row, row count, batch size) calls covering `rows` sequences: the largest compiled
    batch while more rows are left than it holds, then the smallest batch that holds the rest."""
    calls, first, largest = [], 0, max(sizes)
    while rows - first > largest:
        calls.append((first, largest, largest))
        first += largest
    if rows > first:
        calls.append((first, rows - first, min(b for b in sizes if b >= rows - first)))
    return calls


def flat_ids(input_ids) -> list[int]:
    """One prompt: a list of ints, a 1-D integer tensor/array, or a batch of one ([1, P])."""
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
    if not isinstance(ids, list | tuple):
        raise TyllmError(f"input_ids must be a sequence of token ids (a list of int or a 1-D "
                         f"int64 tensor), not {type(input_ids).__name__}.")
    ids = list(ids)
    if ids and isinstance(ids[0], list | tuple):
        if len(ids) != 1:
            raise TyllmError(f"generate takes one prompt but got a batch of {len(ids)}: call "
                             f"generate_batch for several prompts.")
        ids = list(ids[0])
    return [token_id(t) for t in ids]


def integer(value) -> int | None:
    """`value` as an int if it is an integer of any kind (int, numpy, 0-d integer tensor), None
    for floats and bools: never truncated."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def count_of(value, name: str) -> int:
    if (n := integer(value)) is None:
        raise TyllmError(f"{name}={value!r} must be an integer.")
    return n


def token_id(value) -> int:
    if (n := integer(value)) is None:
        raise TyllmError(f"Token id {value!r} is not an integer: pass the tokenizer's ids as "
                         f"ints (a list of int or an int64 tensor), not floats.")
    return n


def check_token_ids(tree: Tree, input_ids: list[int]) -> None:
    vocab = tree.config["vocab_size"]
    bad = [t for t in input_ids if not 0 <= t < vocab]
    if bad:
        raise TyllmError(f"Token ids {bad[:5]} are outside the model's vocabulary of {vocab}: "
                         f"use the tokenizer that was compiled into the tree.")


@dataclass(frozen=True)
class Prefix:
    """A prompt prefix kept in a slot of its own on every die (`Session.keep_prefix`): later
    prompts that start with `ids` begin from its KV instead of recomputing it."""

    ids: tuple[int, ...]
    slot: int
    logits: torch.Tensor | None  # the last prefix token's logits, when it was computed here


PREFIX_SLOTS = -1000  # kept prefixes live in slots -1000, -1001, ...: never a request's


class Session:
    """A loaded tree. `generate` is greedy and returns the new tokens only."""

    def __init__(self, tree: Tree, workers):
        self.tree, self.workers = tree, workers
        self.eos = set(tree.config["eos_token_ids"])
        self.embedding = (load_params(tree.file(layout.EMBEDDING))["embed_tokens"]
                          if tree.config["embedding_as_input"] else None)
        self.decode_len = min(tree.seq_lens)
        self.prefix_slots = itertools.count()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def _check_ids(self, input_ids: list[int]) -> None:
        check_token_ids(self.tree, input_ids)

    def _check_fits(self, prompt: int, max_new_tokens: int) -> None:
        room = self.tree.max_kv
        if prompt < 1:
            raise TyllmError("input_ids is empty: give at least one prompt token.")
        if max_new_tokens < 1:
            raise TyllmError(f"max_new_tokens={max_new_tokens}: ask for at least one token.")
        if prompt > room:
            raise TyllmError(f"The prompt has {prompt} tokens but the KV cache holds {room}: "
                             f"shorten it or recompile with max_kv_cache_size >= {prompt}.")
        if prompt + max_new_tokens - 1 > room:
            raise TyllmError(f"{prompt} prompt tokens + {max_new_tokens} new tokens exceed the KV "
                             f"cache of {room}: ask for at most {room - prompt + 1} new tokens "
                             f"or recompile with a larger max_kv_cache_size.")

    def _check_positions(self, start: int, count: int) -> None:
        if start < 0:
            raise TyllmError(f"start={start}: positions start at 0.")
        if start + count > self.tree.max_kv:
            raise TyllmError(f"Positions up to {start + count} exceed the KV cache of "
                             f"{self.tree.max_kv}: recompile with a larger max_kv_cache_size "
                             f"(--max_model_len for VLM trees).")

    def _inputs(self, tokens: list[int], seq_len: int) -> torch.Tensor:
        ids = torch.tensor(tokens + [0] * (seq_len - len(tokens)), dtype=torch.int64)
        return ids if self.embedding is None else self.embedding[ids]

    def _workers(self):
        if self.workers is None:
            raise TyllmError("This session is closed: load the tree again.")
        return self.workers

    def _step(self, tokens: list[int], start: int, seq_len: int, slot: int = 0) -> torch.Tensor:
        workers = self._workers()
        slices = workers.step(seq_len, self._inputs(tokens, seq_len), start, len(tokens), slot)
        return joined_logits(slices)[0]

    def decode_rows(self, tokens: list[int], starts: list[int],
                    slots: list[int]) -> torch.Tensor:
        """One new token for each of several sequences (token i at position starts[i] of
        sequence slots[i]) in as few calls as the compiled batch sizes allow
        (`batch_calls`); returns their logits [len(slots), V]."""
        self._check_ids(tokens)
        for start in starts:
            self._check_positions(start, 1)
        out = []
        for first, count, batch in batch_calls(len(slots), self.tree.batch_sizes):
            rows = range(first, first + count)
            if batch == 1:
                out += [self._step([tokens[i]], starts[i], self.decode_len, slots[i]) for i in rows]
                continue
            out += list(self._decode_call(batch, [tokens[i] for i in rows],
                                          [starts[i] for i in rows], [slots[i] for i in rows]))
        return torch.stack(out)

    def _decode_call(self, batch: int, tokens: list[int], starts: list[int],
                     slots: list[int]) -> torch.Tensor:
        """One call of the batch-`batch` decode graph: one token per sequence, padded to the
        decode length and to `batch` sequences; [len(slots), V] logits."""
        m = self.decode_len
        ids = [t for token in tokens for t in [token] + [0] * (m - 1)]
        slices = self._workers().rows(batch, m, self._inputs(ids, batch * m), starts,
                                      [1] * len(slots), slots)
        return joined_logits(slices)

    def verify_rows(self, rows: list[list[int]], starts: list[int],
                    slots: list[int]) -> list[torch.Tensor]:
        """Speculative decoding's verify step: for each sequence, its tokens rows[i] (the last
        accepted token, then up to K proposed ones) at positions starts[i].. of slot slots[i],
        in as few calls of the tree's verify graphs as its batch sizes allow; returns each
        sequence's logits [len(rows[i]), V], row j predicting the token after rows[i][j]."""
        self.tree.check_verify_graphs()
        width = self.tree.speculative_tokens + 1
        for row, start in zip(rows, starts, strict=True):
            if not 1 <= len(row) <= width:
                raise TyllmError(f"A verify step takes 1 to {width} tokens per sequence (the "
                                 f"last token and at most {width - 1} proposals, the tree's "
                                 f"speculative_tokens), not {len(row)}.")
            self._check_ids(row)
            self._check_positions(start, len(row))
        out = []
        for first, count, batch in batch_calls(len(slots), self.tree.batch_sizes):
            part = range(first, first + count)
            logits = self._verify_call(batch, width, [rows[i] for i in part],
                                       [starts[i] for i in part], [slots[i] for i in part])
            out += [logits[j * width:j * width + len(rows[i])] for j, i in enumerate(part)]
        return out

    def _verify_call(self, batch: int, width: int, rows: list[list[int]], starts: list[int],
                     slots: list[int]) -> torch.Tensor:
        """One call of the batch-`batch` verify graph: each sequence's rows padded to `width`;
        every row's logits [batch * width, V]."""
        ids = [t for row in rows for t in row + [0] * (width - len(row))]
        slices = self._workers().call("verify", batch, width, self._inputs(ids, batch * width),
                                      starts, [len(row) for row in rows], slots)
        return joined_logits(slices)

    def extend(self, tokens: list[int], start: int, slot: int) -> torch.Tensor:
        """Runs `tokens` at positions `start`.. against the KV cache of sequence `slot` (each
        slot is one independent sequence); returns the logits of the last token."""
        self._check_ids(tokens)
        self._check_positions(start, len(tokens))
        logits = None
        for offset, valid, m in plan_chunks(len(tokens), self.tree.seq_lens):
            logits = self._step(tokens[offset:offset + valid], start + offset, m, slot)
        return logits

    def release(self, slot: int) -> None:
        """A slot's sequence is over. Text sessions keep nothing per slot but its KV cache,
        which the next sequence overwrites; VLM sessions drop the slot's prepared prompt."""

    def prefill(self, input_ids: list[int]) -> torch.Tensor:
        """Runs a whole prompt from position 0 (slot 0); returns the last token's logits."""
        return self.extend(list(input_ids), 0, slot=0)

    def keep_prefix(self, input_ids, from_slot: int | None = None) -> Prefix:
        """Keeps the KV of `input_ids` (a system prompt, a conversation so far) in a slot of its
        own on every die: computed now, or copied from `from_slot` when that slot already
        holds it (e.g. slot 0 after `generate`: the prompt and every generated token but the
        last). Each kept prefix holds one KV slot of memory until `drop_prefix`."""
        ids = flat_ids(input_ids)
        self._check_ids(ids)
        self._check_fits(len(ids), 1)
        slot = PREFIX_SLOTS - next(self.prefix_slots)
        if from_slot is None:
            return Prefix(tuple(ids), slot, self.extend(ids, 0, slot))
        self._workers().call("copy_kv", from_slot, slot, len(ids))
        return Prefix(tuple(ids), slot, None)

    def store_blocks(self, slot: int, positions: list[int], block_ids: list[int],
                     block_size: int) -> None:
        """vLLM prefix caching (tyllm/vllm_ext/prefix_blocks.py): every die keeps these blocks
        of `slot` under their vLLM block ids."""
        self._workers().call("store_blocks", slot, positions, block_ids, block_size)

    def load_blocks(self, slot: int, block_ids: list[int], block_size: int) -> None:
        self._workers().call("load_blocks", slot, block_ids, block_size)

    def drop_prefix(self, prefix: Prefix) -> None:
        self._workers().call("drop_slot", prefix.slot)

    def from_prefix(self, prefix: Prefix, input_ids: list[int], slot: int = 0) -> torch.Tensor:
        """Runs `input_ids`, which start with `prefix`, in `slot`: the prefix's KV is copied in
        and only the rest is computed (at least the last token, unless the prefix kept its
        logits); returns the last token's logits."""
        n = len(prefix.ids)
        if tuple(input_ids[:n]) != prefix.ids:
            raise TyllmError(f"The prompt does not start with the kept prefix ({n} tokens): "
                             f"pass a prompt that begins with the prefix's tokens, or keep a "
                             f"new prefix.")
        self.release(slot)  # a VLM slot's earlier multimodal prompt must not be read
        if n == len(input_ids) and prefix.logits is not None:
            self._workers().call("copy_kv", prefix.slot, slot, n)
            return prefix.logits
        n = min(n, len(input_ids) - 1)
        self._workers().call("copy_kv", prefix.slot, slot, n)
        return self.extend(list(input_ids[n:]), n, slot)

    def generate(self, input_ids: list[int], max_new_tokens: int,
                 stop_at_eos: bool = True, prefix: Prefix | None = None,
                 speculative=None) -> list[int]:
        """`prefix`: a kept prefix the prompt starts with (keep_prefix): its KV is reused.
        `speculative`: tyllm.speculate.Ngram(...) or DraftModel(...) proposes tokens that the
        tree's verify graphs check several at a time; the tokens are the same."""
        input_ids = flat_ids(input_ids)
        max_new_tokens = count_of(max_new_tokens, "max_new_tokens")
        self._check_ids(input_ids)
        self._check_fits(len(input_ids), max_new_tokens)
        return self._greedy_after(
            input_ids, lambda: (self.prefill(input_ids) if prefix is None
                                else self.from_prefix(prefix, input_ids)),
            max_new_tokens, stop_at_eos, speculative)

    def _greedy_after(self, prompt: list[int], prompt_logits, max_new_tokens: int,
                      stop_at_eos: bool, speculative) -> list[int]:
        """The greedy tokens after `prompt`, computed in slot 0 by `prompt_logits()` (its last
        logits), plainly or checking `speculative`'s proposals (refused before any work)."""
        if speculative is None:
            return self.greedy(prompt_logits(), len(prompt), max_new_tokens, stop_at_eos)
        from tyllm.speculate.greedy import proposal_count, speculative_greedy

        proposal_count(self, speculative)
        return speculative_greedy(self, prompt, prompt_logits(), max_new_tokens, speculative,
                                  stop_at_eos)

    def generate_batch(self, prompts: list, max_new_tokens: int,
                       stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy generation for several prompts at once: each prompt is prefilled in its own
        KV slot (0..n-1), then every unfinished sequence decodes in the same calls of the
        tree's batched graphs (`decode_rows`). Row i equals generate(prompts[i], ...)."""
        prompts = prompts.tolist() if hasattr(prompts, "tolist") else prompts  # [B, P] tensor
        if not isinstance(prompts, list | tuple) or any(integer(p) is not None for p in prompts):
            raise TyllmError("generate_batch takes a list of prompts (each a list of token "
                             "ids); for one prompt call generate.")
        prompts = [flat_ids(p) for p in prompts]
        max_new_tokens = count_of(max_new_tokens, "max_new_tokens")
        for ids in prompts:
            self._check_ids(ids)
            self._check_fits(len(ids), max_new_tokens)
        logits = {i: self.extend(ids, 0, slot=i) for i, ids in enumerate(prompts)}
        outs: list[list[int]] = [[] for _ in prompts]
        while logits:
            for i, row in logits.items():
                outs[i].append(greedy_token(row))
            live = [i for i in logits if len(outs[i]) < max_new_tokens
                    and not (stop_at_eos and outs[i][-1] in self.eos)]
            if not live:
                break
            rows = self.decode_rows([outs[i][-1] for i in live],
                                    [len(prompts[i]) + len(outs[i]) - 1 for i in live], live)
            logits = dict(zip(live, rows, strict=True))
        return outs

    def greedy(self, logits: torch.Tensor, length: int, max_new_tokens: int,
               stop_at_eos: bool = True, slot: int = 0) -> list[int]:
        """Decodes greedily after a prompt of `length` tokens whose last logits are given."""
        out = []
        for i in range(max_new_tokens):
            token = greedy_token(logits)
            out.append(token)
            if (stop_at_eos and token in self.eos) or i == max_new_tokens - 1:
                break
            logits = self._step([token], length + i, self.decode_len, slot)
        return out
