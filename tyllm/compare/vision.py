"""A VLM tree's vision tower, block by block: a tapped variant of each vision die's program
(the same VisionDieStep and lowering as the tree's, every tap point an extra output), run on
the tree's own vision parameter files for one image; and HF's vision tower at the same points
(hooks on the blocks' attention projection, MLP output projection and output)."""

from functools import partial
from pathlib import Path

import torch
from torch import nn

from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.params import load_params
from tyllm.capture.export import export_module
from tyllm.checkpoint import TensorReader
from tyllm.compare.points import VISION, flatten, split, vision_point_names
from tyllm.compare.shares import die_share
from tyllm.compare.taps import PREFIX, TapLibraries, TapProgram
from tyllm.compile import program_cache
from tyllm.compile.vision import load_vision_tower, pixel_input
from tyllm.dtypes import DTYPES
from tyllm.models.vlm.spec import vlm_for_config
from tyllm.models.vlm.vision import MLP_NAMES, VisionDieStep, VisionPlan, plan_vision, vision_sizes
from tyllm.runtime.tree import Tree
from tyllm.runtime.vlm.runners import VisionRunner


class TappedVision(nn.Module):
    """A vision die's program returning (*its outputs, *taps in `names` order)."""

    def __init__(self, step: VisionDieStep, names: list[str]):
        super().__init__()
        self.step, self.names = step, list(names)

    def forward(self, pixel_values):
        taps: dict = {}
        outputs = self.step(pixel_values, taps=taps)
        flat = flatten(taps)
        return (*outputs, *(flat[n] for n in self.names))


def vision_plans(config, dies: int) -> list[VisionPlan]:
    v = config.vision_config
    return plan_vision(v.num_heads, vision_sizes(v).intermediate, dies)


def vision_names(config) -> list[str]:
    v = config.vision_config
    return vision_point_names(v.depth, list(getattr(v, "deepstack_visual_indexes", None) or []))


class VisionTapPrograms(TapLibraries):
    """Every vision die's tapped program for one compiled image size (`by_die[die]`), the
    tower built from `checkpoint` when one must be lowered, its weights then bound from the
    tree's files."""

    def __init__(self, tree: Tree, config, checkpoint: Path, size: tuple, grid: tuple, stage):
        super().__init__(tree)
        vision = tree.config["vision"]
        dtype, names = DTYPES[vision["dtype"]], vision_names(config)
        outputs = 2 if vision["deepstack_layers"] else 1
        towers: list = []  # the HF tower, read once if any program must be lowered

        def lower(plan, target, library: Path) -> list[str]:
            if not towers:
                towers.append(load_vision_tower(vlm_for_config(config), config,
                                                TensorReader(checkpoint), dtype))
            step = TappedVision(VisionDieStep(towers[0], plan, grid, dtype).eval(), names)
            return target.lower(export_module(step, pixel_input(config, grid)), library)

        self.by_die: dict[int, TapProgram] = {}
        for plan in vision_plans(config, vision["dies"]):
            stage(f"tapped vision program (vision die {plan.die})", more=1)
            key = program_cache.fingerprint(config.to_dict(), {
                "graph": "vision-taps", "heads": len(plan.heads), "ffn": len(plan.ffn),
                "size": list(size), "grid": list(grid), "dtype": vision["dtype"],
                "target": self.target.as_json()})
            self.by_die[plan.die] = self.program(key, partial(lower, plan), names, outputs)


class VisionTapRunner:
    """A vision die worker running its tapped program on the die's own weights and grid
    constants."""

    calls = ("tap",)
    all_reduce_bytes = staticmethod(VisionRunner.all_reduce_bytes)  # the same collective

    def __init__(self, tree: Tree, rank: int):
        self.tree, self.rank = tree, rank
        self.graphs = {layout.size_tag(g["size"]): g for g in tree.vision_buffers["graphs"]
                       if g["die"] == rank}

    def tap(self, programs: dict, tag: str, pixel_values: torch.Tensor) -> dict:
        graph, program = self.graphs[tag], programs[self.rank]
        params = (load_params(self.tree.file(graph["weights"]))
                  | load_params(self.tree.file(graph["constants"])))
        run = self.tree.backend.load(Path(program.library),
                                     [params[n.removeprefix(PREFIX)] for n in program.param_order])
        values = run(pixel_values)[program.outputs:]
        return {VISION + n: v.float().clone() for n, v in zip(program.names, values, strict=True)}


def mlp_out(block) -> nn.Module:
    return next(getattr(block.mlp, names[1]) for names in MLP_NAMES
                if hasattr(block.mlp, names[1]))


def hook_vision(model, keep, keep_input) -> list:
    """Hooks on HF's vision tower (`keep(name, inputs=False)` makes each hook, `keep_input(name)`
    a pre-hook keeping a module's first input)."""
    visual = model.model.visual
    handles = [visual.blocks[0].register_forward_pre_hook(keep_input(VISION + "input"),
                                                          with_kwargs=True),
               visual.merger.register_forward_hook(keep(VISION + "merger"))]
    for j, merger in enumerate(getattr(visual, "deepstack_merger_list", [])):
        handles.append(merger.register_forward_hook(keep(f"{VISION}deepstack.{j}")))
    for i, block in enumerate(visual.blocks):
        p = f"{VISION}blocks.{i}."
        handles += [block.attn.proj.register_forward_hook(keep(p + "attention.input", True)),
                    block.attn.proj.register_forward_hook(keep(p + "attention.output")),
                    mlp_out(block).register_forward_hook(keep(p + "mlp.input", True)),
                    mlp_out(block).register_forward_hook(keep(p + "mlp.output")),
                    block.register_forward_hook(keep(p + "block.output"))]
    return handles


def vision_die_values(model, values: dict, plan: VisionPlan) -> dict:
    """The HF vision values a vision die's taps are compared with (its partial sums)."""
    visual = model.model.visual
    head_dim = visual.blocks[0].attn.proj.weight.shape[1] // visual.blocks[0].attn.num_heads
    heads = range(plan.heads.start * head_dim, plan.heads.stop * head_dim)
    out = {}
    for name, value in values.items():
        tower, index, point = split(name)
        if tower != "vision":
            continue
        block = f"{VISION}blocks.{index}."
        if point == "attention.input":
            weight = visual.blocks[index].attn.proj.weight
            out[block + "attention.partial"] = die_share(value, weight, heads)
        elif point == "mlp.input":
            weight = mlp_out(visual.blocks[index]).weight
            out[block + "mlp.partial"] = die_share(value, weight, plan.ffn)
        else:
            out[name] = value
    return out
