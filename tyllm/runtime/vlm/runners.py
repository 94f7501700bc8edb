"""What one emulated die runs for a VLM: a language program (its mrope graph feeding its language
graph) and, on the dies named by the vision remap, a vision program."""

import torch

from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.params import load_params
from tyllm.runtime.die import DieRunner, bind_program
from tyllm.runtime.tree import Tree


class LanguageRunner(DieRunner):
    def __init__(self, tree: Tree, die: int):
        super().__init__(tree, die)
        self.deepstack = tree.config["vision"]["deepstack_layers"] > 0
        self.mrope = {g["seq_len"]: bind_program(tree, g, load_params(tree.file(g["params"])))
                      for g in tree.buffers["mrope"] if g["die"] == die}

    def step(self, seq_len: int, embeds: torch.Tensor, positions: torch.Tensor,
             deepstack: torch.Tensor | None, start: int, valid: int,
             slot: int = 0) -> torch.Tensor:
        cos, sin = self.mrope[seq_len](positions)
        inputs = [embeds, cos, sin] + ([deepstack] if self.deepstack else [])
        return self.run(seq_len, inputs, start, valid, slot)

    def rows(self, batch: int, seq_len: int, embeds: torch.Tensor, positions: torch.Tensor,
             deepstack: torch.Tensor | None, starts: list[int], valids: list[int],
             slots: list[int]) -> torch.Tensor:
        """DieRunner.rows for the language model: each sequence's rows get their cos/sin from
        the seq_len mrope graph (positions [3, batch*seq_len])."""
        inputs = self._batch_inputs(batch, seq_len, embeds, positions, deepstack)
        return self.run_rows(batch, seq_len, inputs, starts, valids, slots)

    def verify(self, batch: int, seq_len: int, embeds: torch.Tensor, positions: torch.Tensor,
               deepstack: torch.Tensor | None, starts: list[int], valids: list[int],
               slots: list[int]) -> torch.Tensor:
        """DieRunner.verify for the language model: `rows`' inputs, every row's logits."""
        inputs = self._batch_inputs(batch, seq_len, embeds, positions, deepstack)
        logits = self.run_rows(batch, seq_len, inputs, starts, valids, slots, every_row=True)
        return logits[:len(slots) * seq_len]

    def _batch_inputs(self, batch: int, seq_len: int, embeds: torch.Tensor,
                      positions: torch.Tensor, deepstack: torch.Tensor | None) -> list:
        rope = [self.mrope[seq_len](positions[:, b * seq_len:(b + 1) * seq_len])
                for b in range(batch)]
        cos, sin = (torch.cat([r[i] for r in rope]) for i in (0, 1))
        return [embeds, cos, sin] + ([deepstack] if self.deepstack else [])


class VisionRunner:
    """Vision program `rank`: one graph per compiled size, keyed by 'HxW'."""

    def __init__(self, tree: Tree, rank: int):
        graphs = [g for g in tree.vision_buffers["graphs"] if g["die"] == rank]
        weights = load_params(tree.file(graphs[0]["weights"]))
        self.programs = {layout.size_tag(g["size"]): bind_program(
            tree, g, weights | load_params(tree.file(g["constants"]))) for g in graphs}

    @staticmethod
    def all_reduce_bytes(tree: Tree) -> int:
        vision = tree.config["vision"]
        patches = max(g[0] * g[1] for g in (s["grid"] for s in vision["sizes"]))
        return vision["hidden_size"] * patches * 4

    def step(self, tag: str, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return [o.clone() for o in self.programs[tag](pixel_values)]
