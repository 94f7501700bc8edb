"""The `visual/` part of a VLM tree: one vision program per vision die, one graph per image size."""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.documents import FORMAT_VERSION, write_json
from tyllm.artifacts.layout import ensure_parent
from tyllm.artifacts.params import save_params
from tyllm.backends import library_suffix
from tyllm.checkpoint import TensorReader, load_config
from tyllm.compile import program_cache
from tyllm.compile.core import STATIC, ProgramFiles, StaticJob
from tyllm.compile.programs import CompileContext, Graph, Programs, compile_programs
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


def check_vision_dies(config, request) -> None:
    heads, dies = config.vision_config.num_heads, len(request.vision_remap)
    if dies > heads:
        raise TyllmError(f"Cannot split {heads} vision attention heads across {dies} dies: give "
                         f"{request.option('vm_die_remap')} at most {heads} dies.")


def pixel_input(config, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Pixel rows stay float32 (what the processor gives); the graph casts them, as HF does."""
    v = config.vision_config
    width = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
    return {"pixel_values": torch.zeros(grid[0] * grid[1], width, dtype=torch.float32)}


@dataclass(frozen=True)
class VisionJob(StaticJob):
    """Compiles vision die `plan.die`'s program for one image grid (a compile job:
    tyllm/compile/jobs.py); the tower is read from the checkpoint at `path`."""

    path: Path
    dtype: torch.dtype
    plan: VisionPlan
    grid: tuple[int, int]
    files: ProgramFiles

    def build(self) -> tuple:
        config = load_config(self.path)
        tower = load_vision_tower(vlm_for_config(config), config, TensorReader(self.path),
                                  self.dtype)
        step = VisionDieStep(tower, self.plan, self.grid, self.dtype).eval()
        del tower
        release_weights({n: p for n, p in step.named_parameters()  # written already: shapes
                         if n not in GRID_CONSTANTS})  # suffice; the ONNX twin keeps constants
        return step, pixel_input(config, self.grid), step.output_names


def vision_plans(config, request) -> list[VisionPlan]:
    sizes = vision_sizes(config.vision_config)
    return plan_vision(config.vision_config.num_heads, sizes.intermediate,
                       len(request.vision_remap))


def vision_programs(ckpt, grids: dict, request, target) -> Programs:
    """Every vision die's graph per image size, their programs named (no weights read)."""
    plans, config = vision_plans(ckpt.config, request), ckpt.config.to_dict()
    shared = {"graph": "vision", "dtype": request.dtype, "target": target.as_json()}
    graphs = []
    for plan in plans:
        for i, (size, grid) in enumerate(grids.items()):
            program = program_cache.fingerprint(config, shared | {
                "heads": len(plan.heads), "ffn": len(plan.ffn), "size": list(size),
                "grid": list(grid)})
            graphs.append(vision_graph(ckpt, request, plan, (size, grid, i == 0), program))
    return Programs("vision", graphs, ckpt.config.vision_config.depth,
                    partial(write_vision, ckpt, plans, grids, request))


def vision_graph(ckpt, request, plan: VisionPlan, shape: tuple, fingerprint: str) -> Graph:
    """Die `plan.die`'s vision graph of `shape` (size, grid, whether the default size)."""
    (size, grid, default), d = shape, plan.die
    library = layout.vit_library(d, size, default, library_suffix(request.backend))
    # always an ONNX twin: it is part of visual/
    files = ProgramFiles({STATIC: library}, layout.vit_onnx(d, size), layout.vit_weights(d))
    entry = {"die": d, "size": list(size), "grid": list(grid),
             "weights": layout.vit_weights(d), "constants": layout.vit_grid_params(d, size)}
    return Graph(d, grid[0] * grid[1], f"vision {layout.size_tag(size)}", {STATIC: fingerprint},
                 files, partial(VisionJob, ckpt.path, request.torch_dtype, plan, grid), entry)


def write_vision(ckpt, plans: list[VisionPlan], grids: dict, request, root: Path) -> None:
    """Every vision die's weights and grid constants, the tower read once."""
    tower = load_vision_tower(ckpt.spec, ckpt.config, ckpt.reader, request.torch_dtype)
    for plan in plans:
        write_vision_die(tower, plan, grids, request, root)


def write_vision_die(tower, plan: VisionPlan, grids: dict, request, root: Path) -> None:
    """Die `plan.die`'s vision weights (the same for every size) and per-size grid constants."""
    for i, (size, grid) in enumerate(grids.items()):
        params = dict(VisionDieStep(tower, plan, grid, request.torch_dtype).named_parameters())
        if i == 0:
            save_params(ensure_parent(root, layout.vit_weights(plan.die)),
                        {n: p for n, p in params.items() if n not in GRID_CONSTANTS})
        save_params(root / layout.vit_grid_params(plan.die, size),
                    {n: p for n, p in params.items() if n in GRID_CONSTANTS})


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


def vision_section(config, grids: dict, request) -> dict:
    """The `vision` section of config.json (and of visual/aot_config.json)."""
    v, sizes = config.vision_config, vision_sizes(config.vision_config)
    return {"dies": len(request.vision_remap), "die_remap": list(request.vision_remap),
            "sizes": [{"size": list(s), "grid": list(g)} for s, g in grids.items()],
            "patch_size": v.patch_size, "merge_size": v.spatial_merge_size,
            "temporal_patch_size": v.temporal_patch_size,
            "out_hidden_size": sizes.out,
            "deepstack_layers": len(getattr(v, "deepstack_visual_indexes", None) or []),
            "hidden_size": sizes.width, "dtype": request.dtype}


def write_visual(ctx: CompileContext, ckpt, programs: Programs, grids: dict) -> dict:
    """Compiles every vision program (`programs`: vision_programs) and writes visual/'s
    documents; returns the `vision` section of config.json."""
    graphs = compile_programs(ctx, programs)
    section, visual = vision_section(ckpt.config, grids, ctx.request), ctx.root / layout.VISUAL
    write_json(visual / "aot_config.json", {"format_version": FORMAT_VERSION, **section,
                                            "modalities": list(ctx.request.modalities)})
    write_json(visual / "buffer_config.json", {"format_version": FORMAT_VERSION, "graphs": graphs})
    write_json(visual / "graph.json", vision_graph_document(
        ckpt.config, vision_plans(ckpt.config, ctx.request), graphs))
    return section
