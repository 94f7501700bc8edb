"""One emulated die: its compiled graphs, its parameters and its static KV cache."""

import torch

from tyllm.artifacts.params import load_params
from tyllm.runtime.tree import Tree
from tyllm.windows import history_mask, window_for

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def bind_program(tree: Tree, graph: dict, params: dict):
    """A graph's library, loaded by the tree's backend with its parameters bound in the
    graph's `param_order`."""
    return tree.backend.load(tree.file(graph["library"]), [params[n] for n in graph["param_order"]])


class DieRunner:
    def __init__(self, tree: Tree, die: int):
        graphs = tree.graphs_for(die)
        weights = load_params(tree.file(next(iter(graphs.values()))["weights"]))
        self.programs = {key: self._program(tree, g, weights) for key, g in graphs.items()}
        self.windows = sorted({w for _, w in graphs})
        kv = tree.kv_cache_for(die)
        k = kv["k_cache"]
        self.k_cache = torch.zeros(k["shape"], dtype=TORCH_DTYPES[k["dtype"]])
        self.v_cache = torch.zeros_like(self.k_cache)
        self.slots = {0: (self.k_cache, self.v_cache)}  # slot 0 is the session's own cache

    @staticmethod
    def _program(tree: Tree, graph: dict, weights: dict):
        params = dict(weights)
        for key in ("constants", "graph_params"):
            if graph.get(key):
                params |= load_params(tree.file(graph[key]))
        return bind_program(tree, graph, params)

    def cache(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (K, V) cache of one sequence slot, allocated on first use."""
        if slot not in self.slots:
            self.slots[slot] = (torch.zeros_like(self.k_cache), torch.zeros_like(self.v_cache))
        return self.slots[slot]

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
        return logits.clone()
