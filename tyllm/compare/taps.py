"""Tapped step programs: each die's step with every tap point (points.py) as an extra output,
built from the tree's own config and lowered by the tree's own backend and target, like the
tree's graphs; kept in the program cache. They run on the tree's own parameter files, so a
fault in a die's weights, its all-reduce or its kernels shows in its taps. The tree itself is
never written."""

import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig

from tyllm.artifacts.params import load_params
from tyllm.artifacts.windows import history_mask, window_for
from tyllm.backends import library_suffix
from tyllm.capture.export import export_module, step_at, step_inputs, window_shapes
from tyllm.compare.points import flatten, point_names
from tyllm.compile import program_cache
from tyllm.dtypes import DTYPES
from tyllm.models.decoder import DecoderStep
from tyllm.models.loading import tied_head
from tyllm.models.registry import arch_for_config
from tyllm.models.vlm.language import language_inputs, language_step
from tyllm.models.vlm.spec import vlm_for_config
from tyllm.quant.int4 import scheme_from_config
from tyllm.runtime.die import bind_program, graph_params
from tyllm.runtime.logits import float_logits
from tyllm.runtime.tree import Tree
from tyllm.shard.plan import DiePlan

PREFIX = "step."  # a tapped step's parameters are its step's, under this prefix


class Tapped(nn.Module):
    """A step returning (logits, new_k, new_v, *taps in `names` order); one subclass per
    step signature, so the program's inputs keep the step's names."""

    def __init__(self, step: DecoderStep, names: list[str]):
        super().__init__()
        self.step, self.names = step, list(names)

    def tapped(self, *inputs):
        taps: dict = {}
        logits, new_k, new_v = self.step(*inputs, taps=taps)
        flat = flatten(taps)
        return (logits, new_k, new_v, *(flat[n] for n in self.names))


class TappedStep(Tapped):
    def forward(self, tokens, start_pos, last_index, k_cache, v_cache, history_mask):
        return self.tapped(tokens, start_pos, last_index, k_cache, v_cache, history_mask)


class TappedLanguageStep(Tapped):
    def forward(self, inputs_embeds, rope_cos, rope_sin, start_pos, last_index, k_cache, v_cache,
                history_mask):
        return self.tapped(inputs_embeds, rope_cos, rope_sin, start_pos, last_index, k_cache,
                           v_cache, history_mask)


class TappedDeepstackStep(Tapped):
    def forward(self, inputs_embeds, rope_cos, rope_sin, deepstack, start_pos, last_index,
                k_cache, v_cache, history_mask):
        return self.tapped(inputs_embeds, rope_cos, rope_sin, deepstack, start_pos, last_index,
                           k_cache, v_cache, history_mask)


def hf_config(tree: Tree):
    """The tree's HF config as transformers' class (config.json keeps it whole)."""
    values = dict(tree.config["hf_config"])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def die_plan(tree: Tree, die: int) -> DiePlan:
    p = tree.config["die_plans"][die]
    return DiePlan(die, tree.dies, range(*p["q_heads"]), range(*p["kv_heads"]),
                   range(*p["ffn"]), range(*p["vocab"]))


@dataclass(frozen=True)
class StepShape:
    """What a die's step module is built from, read from the tree (no checkpoint needed:
    weights are graph inputs, bound from the tree's parameter files)."""

    config: object
    plan: DiePlan
    max_kv: int
    dtype: str
    embedding_as_input: bool
    int4: dict | None
    panels: int | None
    vlm: bool

    @classmethod
    def of(cls, tree: Tree, die: int) -> "StepShape":
        c = tree.config
        return cls(hf_config(tree), die_plan(tree, die), tree.max_kv, c["dtype"],
                   c["embedding_as_input"], c.get("quantization"),
                   c["target"].get("weight_panels"), c["kind"] == "vlm")

    def build(self) -> DecoderStep:
        int4 = scheme_from_config(self.int4) if self.int4 else None
        if self.vlm:
            return language_step(vlm_for_config(self.config), self.config, self.plan,
                                 max_kv=self.max_kv, dtype=DTYPES[self.dtype], int4=int4,
                                 panels=self.panels)
        arch = arch_for_config(self.config)
        dims = arch.dims_from_config(self.config)
        table = arch.weight_table(dims, self.embedding_as_input)
        return DecoderStep(dims, self.plan, seq_len=1, max_kv=self.max_kv,
                           embedding_as_input=self.embedding_as_input, dtype=DTYPES[self.dtype],
                           int4=int4, panels=self.panels,
                           tied_head=tied_head(table, self.plan, dims, self.embedding_as_input))

    def tapped(self, seq_len: int, names: list[str]):
        """(the tapped step at `seq_len` rows, its example inputs)."""
        step = step_at(self.build().eval(), seq_len)
        if not self.vlm:
            return TappedStep(step, names), step_inputs(step, seq_len)
        wrapper = TappedDeepstackStep if step.deepstack_layers else TappedLanguageStep
        return wrapper(step, names), language_inputs(step, seq_len)

    def fingerprint(self, seq_len: int, window: int, target) -> str:
        return program_cache.fingerprint(self.config.to_dict(), {
            "graph": "llm-step-taps", "program_key": self.plan.program_key(self.group_size),
            "seq_len": seq_len, "window": window, "max_kv": self.max_kv, "dtype": self.dtype,
            "embedding_as_input": self.embedding_as_input, "int4": self.int4,
            "panels": self.panels, "target": target.as_json()})

    @property
    def group_size(self) -> int:
        """Query heads per KV head, as the compile's program keys count them."""
        if self.vlm:
            return vlm_for_config(self.config).text_dims(self.config).group_size
        return arch_for_config(self.config).dims_from_config(self.config).group_size


@dataclass(frozen=True)
class TapProgram:
    library: str
    param_order: list[str]
    names: list[str]  # the taps, after the program's own outputs
    outputs: int = 3  # the program's own outputs (a step's logits, new_k, new_v)


class TapLibraries:
    """Tapped programs by fingerprint: from the program cache, or lowered by the tree's own
    backend and target into a folder of this object's, then kept in the cache. Close it when
    done (its folder holds programs the cache could not keep)."""

    def __init__(self, tree: Tree):
        self.folder = tempfile.TemporaryDirectory(prefix="tyllm-taps-")
        self.target = tree.backend.target(tree.config["target"].get("num_cores") or 1)
        self.suffix = library_suffix(tree.config["backend"])

    def program(self, key: str, lower, names: list[str], outputs: int = 3) -> TapProgram:
        """`lower(target, library) -> param_order` runs only when the cache lacks `key`."""
        found = program_cache.files(key, need_twin=False)
        if found is None:
            library = Path(self.folder.name) / f"{key}{self.suffix}"
            order = lower(self.target, library)
            program_cache.store(key, library, None, {"param_order": order, "points": names})
            found = program_cache.files(key, need_twin=False) or (
                library, None, {"param_order": order, "points": names})
        library, _, io = found
        return TapProgram(str(library), io["param_order"], io["points"], outputs)

    def close(self) -> None:
        self.folder.cleanup()


class TapPrograms(TapLibraries):
    """Every language die's tapped programs for the (seq_len, window) pairs a prompt's chunks
    use: `by_die[die][(seq_len, window)]`."""

    def __init__(self, tree: Tree, shapes: list[tuple[int, int]], stage):
        super().__init__(tree)
        names = point_names(tree.config["num_layers"])
        steps = [StepShape.of(tree, d) for d in range(tree.dies)]
        keys = {(d, s): steps[d].fingerprint(*s, self.target) for d in range(tree.dies)
                for s in shapes}
        self.by_die: dict[int, dict] = {d: {} for d in range(tree.dies)}
        todo = sorted(set(keys.values()))
        for i, key in enumerate(todo):
            die, shape = next(k for k, v in keys.items() if v == key)
            stage(f"tapped program {i + 1}/{len(todo)} (die {die}, {shape[0]} rows, KV window "
                  f"{shape[1]})", more=1)
            program = self.program(key, partial(lower_step, steps[die], shape, names), names)
            for (d, s), k in keys.items():
                if k == key:
                    self.by_die[d][s] = program


def lower_step(shape: StepShape, seq_len_window: tuple[int, int], names: list[str], target,
               library: Path) -> list[str]:
    seq_len, window = seq_len_window
    tapped, inputs = shape.tapped(seq_len, names)
    program = export_module(tapped, inputs, window_shapes(inputs, shape.max_kv))
    return target.lower_windows(program, {window: library})


class TapRunner:
    """A die worker (tyllm/runtime/workers.py) running tapped programs on the die's own
    parameter files (the files its step graphs read) and a KV cache of its own."""

    calls = ("tap",)

    def __init__(self, tree: Tree, die: int):
        self.tree, self.die = tree, die
        self.graphs = tree.graphs_for(die)
        self.weights = load_params(tree.file(next(iter(self.graphs.values()))["weights"]))
        k = tree.kv_cache_for(die)["k_cache"]
        self.kv_shape, self.kv_dtype = k["shape"], DTYPES[k["dtype"]]
        self.bound: dict[str, object] = {}  # library -> loaded program

    def bind(self, program: TapProgram, seq_len: int):
        """The tapped program bound to the parameters of the die's seq_len graph (once)."""
        if program.library not in self.bound:
            graph = next(g for (m, _), g in self.graphs.items() if m == seq_len)
            params = graph_params(self.tree, graph, self.weights)
            self.bound[program.library] = self.tree.backend.load(
                Path(program.library), [params[n.removeprefix(PREFIX)]
                                        for n in program.param_order])
        return self.bound[program.library]

    def graph_inputs(self, chunk, seq_len: int) -> list[torch.Tensor]:
        """A chunk's leading graph inputs: its token ids (or embeddings)."""
        return [chunk]

    def tap(self, programs: dict, chunks: list, inputs: list) -> dict:
        """Runs the prompt's `chunks` ((start, valid, seq_len), with their inputs) through this
        die's tapped `programs` ({die: {(seq_len, window): TapProgram}}); returns every tap
        point's valid rows, and the last row's logits."""
        k_cache = torch.zeros(self.kv_shape, dtype=self.kv_dtype)
        v_cache = torch.zeros_like(k_cache)
        rows: dict[str, list] = {}
        logits = None
        for (start, valid, m), chunk in zip(chunks, inputs, strict=True):
            window = window_for(start, self.tree.windows)
            program = programs[self.die][m, window]
            logits, new_k, new_v, *values = self.bind(program, m)(
                *self.graph_inputs(chunk, m), torch.tensor([start]), torch.tensor([valid - 1]),
                k_cache, v_cache, history_mask(start, window))
            k_cache[:, :, start:start + valid] = new_k[:, :, :valid]
            v_cache[:, :, start:start + valid] = new_v[:, :, :valid]
            for name, value in zip(program.names, values, strict=True):
                rows.setdefault(name, []).append(value[:valid].float())
        taps = {name: torch.cat(parts) for name, parts in rows.items()}
        return taps | {"logits": float_logits(logits)[0]}


class LanguageTapRunner(TapRunner):
    """TapRunner for a VLM's language dies: a chunk is (embeddings, 3-axis positions,
    deepstack rows or None); the die's own mrope program turns positions into cos/sin."""

    def __init__(self, tree: Tree, die: int):
        super().__init__(tree, die)
        self.mrope = {g["seq_len"]: bind_program(tree, g, load_params(tree.file(g["params"])))
                      for g in tree.buffers["mrope"] if g["die"] == die}

    def graph_inputs(self, chunk, seq_len: int) -> list[torch.Tensor]:
        embeds, positions, deepstack = chunk
        cos, sin = self.mrope[seq_len](positions)
        return [embeds, cos, sin] + ([] if deepstack is None else [deepstack])
