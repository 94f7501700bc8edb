"""One emulated die: its compiled graphs, its parameters and its static KV cache."""

import torch

from tyllm.artifacts.huge_pages import huge_page_zeros
from tyllm.artifacts.params import load_params
from tyllm.artifacts.windows import history_mask, window_for
from tyllm.dtypes import DTYPES
from tyllm.runtime.logits import float_logits
from tyllm.runtime.tree import Tree


def bind_program(tree: Tree, graph: dict, params: dict):
    """A graph's library, loaded by the tree's backend with its parameters bound in the
    graph's `param_order`."""
    return tree.backend.load(tree.file(graph["library"]), [params[n] for n in graph["param_order"]])


def graph_params(tree: Tree, graph: dict, weights: dict) -> dict:
    """Every parameter a step graph binds: the die's weights, its constants and the graph's
    own parameters (tyllm.compare binds its tapped programs to the same)."""
    params = dict(weights)
    for key in ("constants", "graph_params"):
        if graph.get(key):
            params |= load_params(tree.file(graph[key]))
    return params


class DieRunner:
    def __init__(self, tree: Tree, die: int):
        graphs = tree.graphs_for(die)
        weights = load_params(tree.file(next(iter(graphs.values()))["weights"]))
        self.programs = {key: self._program(tree, g, weights) for key, g in graphs.items()}
        self.batched = {key: self._program(tree, g, weights)
                        for key, g in tree.batched_graphs_for(die).items()}
        self.verifying = {key: self._program(tree, g, weights)
                          for key, g in tree.verify_graphs_for(die).items()}
        self.windows = sorted({w for _, w in graphs})
        kv = tree.kv_cache_for(die)
        k = kv["k_cache"]
        self.cache_shape, self.cache_dtype = k["shape"], DTYPES[k["dtype"]]
        self.k_cache, self.v_cache = self._zeros(), self._zeros()
        self.slots = {0: (self.k_cache, self.v_cache)}  # slot 0 is the session's own cache
        self.blocks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # vLLM block id -> KV

    @staticmethod
    def _program(tree: Tree, graph: dict, weights: dict):
        return bind_program(tree, graph, graph_params(tree, graph, weights))

    def _zeros(self) -> torch.Tensor:
        return huge_page_zeros(self.cache_shape, self.cache_dtype)

    def cache(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (K, V) cache of one sequence slot, allocated on first use."""
        if slot not in self.slots:
            self.slots[slot] = (self._zeros(), self._zeros())
        return self.slots[slot]

    def copy_kv(self, source: int, target: int, length: int) -> None:
        """The first `length` positions of slot `source`'s K/V copied into slot `target` (a
        kept prefix into a request's slot, or a finished turn into a kept prefix)."""
        (k_from, v_from), (k_to, v_to) = self.cache(source), self.cache(target)
        k_to[:, :, :length] = k_from[:, :, :length]
        v_to[:, :, :length] = v_from[:, :, :length]

    def store_blocks(self, slot: int, positions: list[int], block_ids: list[int],
                     block_size: int) -> None:
        """vLLM prefix caching: the `block_size` positions from each of `positions` in `slot`
        kept under the vLLM block id they fill (a later request whose prompt hits that block
        loads it). At most one entry per block id vLLM has: the store is bounded by the KV
        blocks the engine was given."""
        k, v = self.cache(slot)
        for start, block in zip(positions, block_ids, strict=True):
            end = start + block_size
            self.blocks[block] = (k[:, :, start:end].clone(), v[:, :, start:end].clone())

    def load_blocks(self, slot: int, block_ids: list[int], block_size: int) -> None:
        """The kept blocks `block_ids` copied into `slot` as its first positions."""
        k, v = self.cache(slot)
        for i, block in enumerate(block_ids):
            k_block, v_block = self.blocks[block]
            k[:, :, i * block_size:(i + 1) * block_size] = k_block
            v[:, :, i * block_size:(i + 1) * block_size] = v_block

    def drop_slot(self, slot: int) -> None:
        """Frees a slot's cache (slot 0, the session's own, stays)."""
        if slot != 0:
            self.slots.pop(slot, None)

    def step(self, seq_len: int, tokens: torch.Tensor, start: int, valid: int,
             slot: int = 0) -> torch.Tensor:
        """Runs `valid` real rows (of `seq_len`) at position `start` against the KV cache of
        `slot`; returns this die's logits."""
        return self.run(seq_len, [tokens], start, valid, slot)

    def run(self, seq_len: int, inputs: list[torch.Tensor], start: int, valid: int,
            slot: int) -> torch.Tensor:
        """Calls the seq_len graph of the smallest KV window holding the `start` positions of
        history with `inputs`, start/last index, the slot's cache and the window's history
        mask; writes the valid new K/V rows into the cache."""
        k_cache, v_cache = self.cache(slot)
        window = window_for(start, self.windows)
        logits, new_k, new_v = self.programs[seq_len, window](
            *inputs, torch.tensor([start]), torch.tensor([valid - 1]), k_cache, v_cache,
            history_mask(start, window))
        k_cache[:, :, start:start + valid] = new_k[:, :, :valid]
        v_cache[:, :, start:start + valid] = new_v[:, :, :valid]
        return float_logits(logits)

    def rows(self, batch: int, seq_len: int, tokens: torch.Tensor, starts: list[int],
             valids: list[int], slots: list[int]) -> torch.Tensor:
        """One call of the batch-`batch` graph for len(slots) <= batch sequences, each at its
        own start with its own valid rows and KV slot; `tokens` holds batch*seq_len rows,
        sequence after sequence. Returns [len(slots), V_d] logits."""
        return self.run_rows(batch, seq_len, [tokens], starts, valids, slots)

    def verify(self, batch: int, seq_len: int, tokens: torch.Tensor, starts: list[int],
               valids: list[int], slots: list[int]) -> torch.Tensor:
        """One call of the batch-`batch` verify graph (speculative decoding): like `rows`, but
        returns the logits of every row, [len(slots) * seq_len, V_d], sequence after sequence
        (a sequence's rows past its valid ones are padding)."""
        logits = self.run_rows(batch, seq_len, [tokens], starts, valids, slots, every_row=True)
        return logits[:len(slots) * seq_len]

    def run_rows(self, batch: int, seq_len: int, inputs: list[torch.Tensor],
                 starts: list[int], valids: list[int], slots: list[int],
                 every_row: bool = False) -> torch.Tensor:
        """`rows` with the graph's leading inputs given (`every_row`: a verify graph's call).
        Rows past the real sequences are padding that reads the first sequence's cache and
        writes nothing."""
        pad = batch - len(slots)
        window = window_for(max(starts), self.windows)
        caches = [self.cache(s) for s in slots] + [self.cache(slots[0])] * pad
        starts_all, valids_all = starts + [0] * pad, valids + [1] * pad
        if every_row:
            program, last = self.verifying[batch, window], list(range(batch * seq_len))
        else:
            program = self.batched[batch, window]
            last = [b * seq_len + v - 1 for b, v in enumerate(valids_all)]
        mask = torch.stack([history_mask(s, window) for s in starts_all])
        mask = mask[0] if batch == 1 else mask  # batch-1 graphs take one sequence's mask
        logits, new_k, new_v = program(
            *inputs, torch.tensor(starts_all), torch.tensor(last), *caches[0], mask,
            *(t for pair in caches[1:] for t in pair))
        for b, (start, valid) in enumerate(zip(starts, valids, strict=True)):
            rows = slice(b * seq_len, b * seq_len + valid)
            caches[b][0][:, :, start:start + valid] = new_k[:, :, rows]
            caches[b][1][:, :, start:start + valid] = new_v[:, :, rows]
        return float_logits(logits if every_row else logits[:len(slots)])
