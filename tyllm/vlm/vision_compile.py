"""The `visual/` part of a VLM tree: one vision program per vision die, one graph per image size."""

from pathlib import Path

import torch

from tyllm.artifacts.documents import FORMAT_VERSION, write_json
from tyllm.artifacts.layout import ensure_parent
from tyllm.artifacts.params import save_params
from tyllm.checkpoint import TensorReader
from tyllm.compile_core import compile_module, share_module
from tyllm.errors import TyllmError
from tyllm.models.vlm.language import VISION_PREFIXES, checkpoint_prefix
from tyllm.models.vlm.vision import (
    GRID_CONSTANTS,
    VisionDieStep,
    VisionPlan,
    plan_vision,
    vision_sizes,
)
from tyllm.vlm import layout


def load_vision_tower(spec, config, reader: TensorReader, dtype):
    """The HF vision tower class, built from vision_config, weights read from the checkpoint."""
    tower = spec.hf_class(spec.vision_class)._from_config(config.vision_config)
    prefix = checkpoint_prefix(reader, VISION_PREFIXES, "patch_embed.proj.weight")
    names = [n for n in tower.state_dict()]
    state = {n: reader.read(prefix + n) for n in names}
    tower.load_state_dict(state, strict=True)
    return tower.to(dtype).eval()


def check_vision_dies(config, dies: int) -> None:
    heads = config.vision_config.num_heads
    if dies > heads:
        raise TyllmError(f"Cannot split {heads} vision attention heads across {dies} dies: give "
                         f"--vm_die_remap at most {heads} dies.")


def pixel_input(config, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Pixel rows stay float32 (what the processor gives); the graph casts them, as HF does."""
    v = config.vision_config
    width = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
    return {"pixel_values": torch.zeros(grid[0] * grid[1], width, dtype=torch.float32)}


def compile_vision_die(tower, config, plan: VisionPlan, grids: dict, request, root: Path,
                       target, report, compiled: dict) -> list[dict]:
    """Vision die `plan.die`'s graph per size; `compiled` maps (heads, MLP columns, size) to the
    entry of the die that compiled that program first, which later dies of that shape share."""
    entries = []
    for i, (size, grid) in enumerate(grids.items()):
        step = VisionDieStep(tower, plan, grid, request.torch_dtype).eval()
        params = dict(step.named_parameters())
        if i == 0:  # the weights are the same for every size
            save_params(ensure_parent(root, layout.vit_weights(plan.die)),
                        {n: p for n, p in params.items() if n not in GRID_CONSTANTS})
        save_params(root / layout.vit_grid_params(plan.die, size),
                    {n: p for n, p in params.items() if n in GRID_CONSTANTS})
        onnx = layout.vit_onnx(plan.die, size)  # always: the vision twin is part of visual/
        library = layout.vit_library(plan.die, size, default=i == 0)
        key = (len(plan.heads), len(plan.ffn), size)
        with report.graph(plan.die, grid[0] * grid[1], f"vision {layout.size_tag(size)}") as t:
            entry = (share_module(compiled[key], root, library, t, report, onnx,
                                  layout.vit_weights(plan.die)) if key in compiled else
                     compile_module(step, pixel_input(config, grid), step.output_names, root,
                                    library, target, t, report, onnx,
                                    layout.vit_weights(plan.die)))
        entries.append({**entry, "die": plan.die, "size": list(size), "grid": list(grid),
                        "weights": layout.vit_weights(plan.die),
                        "constants": layout.vit_grid_params(plan.die, size)})
        compiled.setdefault(key, entries[-1])
    return entries


def vision_graph_document(config, plans, graphs: list[dict]) -> dict:
    """graph.json: how a vision request flows through the programs (the runtime's contract)."""
    v = config.vision_config
    deep = list(getattr(v, "deepstack_visual_indexes", None) or [])
    return {"format_version": FORMAT_VERSION,
            "stages": ["patch_embed",
                       *(["position_embedding"] if hasattr(v, "num_position_embeddings") else []),
                       *[f"block.{i}" for i in range(v.depth)], "merger"],
            "all_reduces_per_run": 2 * v.depth, "deepstack_layers": deep,
            "programs": [{"die": p.die, "heads": [p.heads.start, p.heads.stop],
                          "ffn": [p.ffn.start, p.ffn.stop]} for p in plans],
            "inputs": graphs[0]["inputs"],
            "outputs": [o["name"] for o in graphs[0]["outputs"]],
            "merge": "die 0's outputs (every die computes the replicated merger)"}


def write_visual(ckpt, grids: dict, request, root: Path, target, report) -> dict:
    """Compiles every vision program; returns the `vision` section of config.json."""
    config = ckpt.config
    sizes = vision_sizes(config.vision_config)
    plans = plan_vision(config.vision_config.num_heads, sizes.intermediate,
                        len(request.vision_remap))
    tower = load_vision_tower(ckpt.spec, config, ckpt.reader, request.torch_dtype)
    compiled: dict = {}
    graphs = [g for plan in plans for g in
              compile_vision_die(tower, config, plan, grids, request, root, target, report,
                                 compiled)]
    v = config.vision_config
    section = {"dies": len(plans), "die_remap": list(request.vision_remap),
               "sizes": [{"size": list(s), "grid": list(g)} for s, g in grids.items()],
               "patch_size": v.patch_size, "merge_size": v.spatial_merge_size,
               "temporal_patch_size": v.temporal_patch_size,
               "out_hidden_size": sizes.out,
               "deepstack_layers": len(getattr(v, "deepstack_visual_indexes", None) or []),
               "hidden_size": sizes.width, "dtype": request.dtype}
    write_json(root / layout.VISUAL / "aot_config.json",
               {"format_version": FORMAT_VERSION, **section,
                "modalities": list(request.modalities)})
    write_json(root / layout.VISUAL / "buffer_config.json",
               {"format_version": FORMAT_VERSION, "graphs": graphs})
    write_json(root / layout.VISUAL / "graph.json", vision_graph_document(config, plans, graphs))
    return section
