"""The `visual/` part of a VLM tree: one vision program per vision die, one graph per image size."""

from dataclasses import dataclass
from pathlib import Path

import torch

from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.documents import FORMAT_VERSION, write_json
from tyllm.artifacts.layout import ensure_parent
from tyllm.artifacts.params import save_params
from tyllm.backends import library_suffix
from tyllm.checkpoint import TensorReader, load_config
from tyllm.compile import program_cache
from tyllm.compile.core import compile_module
from tyllm.compile.module_programs import ModuleGraph, compile_modules
from tyllm.compile.step_capture import release_weights
from tyllm.errors import TyllmError
from tyllm.models.vlm.language import VISION_PREFIXES, checkpoint_prefix
from tyllm.models.vlm.spec import vlm_for_config
from tyllm.models.vlm.vision import (
    GRID_CONSTANTS,
    VisionDieStep,
    VisionPlan,
    plan_vision,
    vision_sizes,
)


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


@dataclass(frozen=True)
class VisionJob:
    """Compiles vision die `plan.die`'s program for one image grid (a compile job:
    tyllm/compile/jobs.py); the tower is read from the checkpoint at `path`."""

    path: Path
    dtype: torch.dtype
    plan: VisionPlan
    grid: tuple[int, int]
    library: str
    onnx: str
    weights: str

    def __call__(self, root: Path, target, report) -> dict:
        config = load_config(self.path)
        tower = load_vision_tower(vlm_for_config(config), config, TensorReader(self.path),
                                  self.dtype)
        step, timings = VisionDieStep(tower, self.plan, self.grid, self.dtype).eval(), {}
        del tower
        release_weights({n: p for n, p in step.named_parameters()  # written already: shapes
                         if n not in GRID_CONSTANTS})  # suffice; the ONNX twin keeps constants
        entry = compile_module(step, pixel_input(config, self.grid), step.output_names, root,
                               self.library, target, timings, report, self.onnx, self.weights)
        return {"io": entry, "timings": timings}


def vision_program(config, plan: VisionPlan, size, grid, request, target) -> str:
    """Everything a vision program depends on, for the program cache and in-tree sharing."""
    return program_cache.fingerprint(config.to_dict(), {
        "graph": "vision", "heads": len(plan.heads), "ffn": len(plan.ffn), "size": list(size),
        "grid": list(grid), "dtype": request.dtype, "target": target.as_json()})


def write_vision_die(tower, plan: VisionPlan, grids: dict, request, root: Path) -> None:
    """Die `plan.die`'s vision weights (the same for every size) and per-size grid constants."""
    for i, (size, grid) in enumerate(grids.items()):
        params = dict(VisionDieStep(tower, plan, grid, request.torch_dtype).named_parameters())
        if i == 0:
            save_params(ensure_parent(root, layout.vit_weights(plan.die)),
                        {n: p for n, p in params.items() if n not in GRID_CONSTANTS})
        save_params(root / layout.vit_grid_params(plan.die, size),
                    {n: p for n, p in params.items() if n in GRID_CONSTANTS})


def vision_graphs(ckpt, plans, grids: dict, request, target) -> list[ModuleGraph]:
    graphs = []
    for plan in plans:
        for i, (size, grid) in enumerate(grids.items()):
            library = layout.vit_library(plan.die, size, i == 0, library_suffix(request.backend))
            onnx = layout.vit_onnx(plan.die, size)  # always: the vision twin is part of visual/
            job = VisionJob(ckpt.path, request.torch_dtype, plan, grid, library, onnx,
                            layout.vit_weights(plan.die))
            graphs.append(ModuleGraph(
                plan.die, grid[0] * grid[1], f"vision {layout.size_tag(size)}",
                vision_program(ckpt.config, plan, size, grid, request, target), job, library,
                onnx, layout.vit_weights(plan.die)))
    return graphs


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


def write_visual(ckpt, grids: dict, request, root: Path, target, report, pool) -> dict:
    """Compiles every vision program on `pool` (compile_jobs.Pool); returns the `vision`
    section of config.json."""
    config = ckpt.config
    sizes = vision_sizes(config.vision_config)
    plans = plan_vision(config.vision_config.num_heads, sizes.intermediate,
                        len(request.vision_remap))
    def write() -> None:
        tower = load_vision_tower(ckpt.spec, config, ckpt.reader, request.torch_dtype)
        for plan in plans:
            write_vision_die(tower, plan, grids, request, root)

    modules = vision_graphs(ckpt, plans, grids, request, target)
    entries = compile_modules(modules, "vision", request, root, target, report,
                              ckpt.config.vision_config.depth, pool, write)
    graphs = [{**entry, "die": plan.die, "size": list(size), "grid": list(grid),
               "weights": layout.vit_weights(plan.die),
               "constants": layout.vit_grid_params(plan.die, size)}
              for entry, (plan, (size, grid)) in zip(
                  entries, [(p, sg) for p in plans for sg in grids.items()], strict=True)]
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
