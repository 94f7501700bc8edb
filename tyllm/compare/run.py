"""`compare(tree, model, ...)`: both checks of tyllm.compare on one prompt, as a CompareReport."""

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from tyllm.artifacts import vlm_layout
from tyllm.artifacts.manifest import verify_files
from tyllm.artifacts.windows import window_for
from tyllm.compare.logits import LogitsCheck, check_logits
from tyllm.compare.metrics import Measure, measure
from tyllm.compare.points import VISION, describe, point_names, split
from tyllm.compare.prompts import Prompt, text_prompt, vlm_prompt
from tyllm.compare.reference import check_matches, die_values, load_reference, reference_values
from tyllm.compare.taps import LanguageTapRunner, TapPrograms, TapRunner, die_plan, hf_config
from tyllm.compare.thresholds import Thresholds, thresholds_for
from tyllm.compare.vision import (
    VisionTapPrograms,
    VisionTapRunner,
    vision_die_values,
    vision_names,
    vision_plans,
)
from tyllm.compile.report import new_log, output_into
from tyllm.errors import TyllmError
from tyllm.runtime.tree import Tree
from tyllm.runtime.worker_kinds import WORKER_NAMES


@dataclass(frozen=True)
class PointResult:
    name: str  # "layers.17.mlp.output", "embedding", "norm", "logits", "vision.blocks.2...."
    die: int  # language die, or vision die for vision points
    measure: Measure
    passed: bool

    def as_json(self) -> dict:
        tower, index, point = split(self.name)
        return {"name": self.name, "tower": tower, "die": self.die, "layer": index,
                "point": point, **self.measure.as_json(), "passed": self.passed}


@dataclass
class CompareReport:
    tree: str
    model: str
    prompt_tokens: list[int]
    layers: int
    dies: int
    thresholds: Thresholds
    points: list[PointResult]  # compute order (vision tower first); dies in order at each point
    logits: LogitsCheck
    log: str
    vision_dies: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> PointResult | None:
        return next((p for p in self.points if not p.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None and not self.logits.failures()

    def as_json(self) -> dict:
        first = self.first_failure
        return {"tree": self.tree, "model": self.model, "prompt_tokens": self.prompt_tokens,
                "layers": self.layers, "dies": self.dies, "vision_dies": self.vision_dies,
                "passed": self.passed,
                "first_failure": None if first is None else first.as_json() | {
                    "where": describe(first.name, first.die)},
                "logits_failures": self.logits.failures(),
                "thresholds": self.thresholds.as_json(),
                "points": [p.as_json() for p in self.points], "logits": self.logits.as_json(),
                "log": self.log, "notes": self.notes}


def open_tree(path, dies: int | None) -> Tree:
    tree = Tree(Path(path), dies=dies)
    tree.backend  # noqa: B018 - a tree of a backend this tyllm lacks fails here, clearly
    verify_files(tree.root, tree.manifest)
    return tree


class Progress:
    """One bar on the terminal: stage, step i/n, ETA (none when quiet)."""

    def __init__(self, terminal, quiet: bool, steps: int):
        from tqdm import tqdm

        self.bar = tqdm(total=steps, file=terminal, disable=quiet, unit="step", desc="compare",
                        bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar:20}| {elapsed}<"
                                   "{remaining}")

    def stage(self, text: str, more: int = 0) -> None:
        """Names the stage now starting (`more`: steps it adds to the total)."""
        self.bar.total += more
        self.bar.set_description_str(text)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def dies_running(tree: Tree, runner, workers: str, placement: list[int] | None):
    from tyllm.runtime.workers import WORKER_KINDS

    return contextlib.closing(WORKER_KINDS[workers](tree, runner=runner, placement=placement))


def language_taps(tree: Tree, prompt: Prompt, workers: str, stage) -> list[dict]:
    """Every language die's tap values over the prompt (one dict per die)."""
    shapes = sorted({(m, window_for(start, tree.windows)) for start, _, m in prompt.chunks})
    vlm = tree.config["kind"] == "vlm"
    programs = TapPrograms(tree, shapes, stage)
    stage(f"run the tapped programs on {tree.dies} die(s)")
    try:
        with dies_running(tree, LanguageTapRunner if vlm else TapRunner, workers,
                          tree.config["language_die_remap"] if vlm else None) as dies:
            return dies.call("tap", programs.by_die, prompt.chunks, prompt.inputs)
    finally:
        programs.close()


def vision_taps(tree: Tree, config, checkpoint: Path, prompt: Prompt, workers: str,
                stage) -> list[dict]:
    """Every vision die's tap values for the prompt's image (one dict per vision die)."""
    item = prompt.image
    size = next(s for s in tree.config["vision"]["sizes"] if tuple(s["size"]) == item.size)
    programs = VisionTapPrograms(tree, config, checkpoint, item.size, tuple(size["grid"]), stage)
    try:
        with dies_running(tree, VisionTapRunner, workers,
                          tree.config["vision"]["die_remap"]) as dies:
            return dies.call("tap", programs.by_die, vlm_layout.size_tag(item.size),
                             item.slices[0])
    finally:
        programs.close()


def judged(names: list[str], expected: list[dict], got: list[dict],
           thresholds: Thresholds) -> list[PointResult]:
    out = []
    for name in names:
        for die, (want, have) in enumerate(zip(expected, got, strict=True)):
            m = measure(want[name], have[name])
            ok = m.cosine >= thresholds.cosine and m.sqnr_db >= thresholds.sqnr_db
            out.append(PointResult(name, die, m, ok))
    return out


def head_dim(config) -> int:
    text = getattr(config, "text_config", config)
    return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads


def check_model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise TyllmError(f"{folder} is not a HF checkpoint folder (no config.json): pass --model "
                         f"the checkpoint the tree was compiled from.")


def compare(tree, model, prompt: str | None = None, tokens=None, image=None,
            new_tokens: int = 8, workers: str = "threads", dies: int | None = None,
            chat: bool = True, quiet: bool = False, cosine: float | None = None,
            sqnr_db: float | None = None, top1: float | None = None) -> CompareReport:
    """Where the compiled `tree` departs from the HF checkpoint `model` on one prompt (`prompt`
    through the tree's tokenizer, or `tokens`; a VLM tree: `prompt` and one `image`, a path or
    a PIL image); `cosine`, `sqnr_db`, `top1` override the per-dtype defaults (thresholds.py).
    Framework output goes to a log the report names."""
    if workers not in WORKER_NAMES:
        raise TyllmError(f"Unknown workers={workers!r}; choose one of {list(WORKER_NAMES)}.")
    t, folder = open_tree(tree, dies), Path(model)
    check_model_folder(folder)
    vlm = t.config["kind"] == "vlm"
    if image is not None and not vlm:
        raise TyllmError(f"{t.root} is a text-only tree: drop --image (it is for trees compiled "
                         f"by scripts/compile_vlm.py).")
    if not vlm:
        text_prompt(t, prompt, tokens, chat, new_tokens)  # bad input fails before any work
    log = new_log("compare")
    with output_into(log) as terminal, contextlib.closing(Progress(terminal, quiet, 4)) as bar:
        bar.stage("load the HF reference")
        reference, quantized = load_reference(folder)
        check_matches(t.config, reference, folder, t.root)
        thresholds = thresholds_for(t.config["dtype"], bool(t.config.get("quantization"))
                                    == quantized, cosine=cosine, sqnr_db=sqnr_db, top1=top1)
        bar.stage(f"teacher-forced logits ({new_tokens} generated tokens)")
        from tyllm import runtime

        with contextlib.closing(runtime.load(t.root, workers=workers)) as session:
            p = (vlm_prompt(session, prompt, image, tokens, chat, new_tokens) if vlm
                 else text_prompt(t, prompt, tokens, chat, new_tokens))
            logits = check_logits(reference, session, p, new_tokens, thresholds)
        bar.stage("HF's values at every tap point")
        values = reference_values(reference, p.ids, p.hf_extra(p.ids))
        points = []
        if vlm:
            config = hf_config(t)
            got = vision_taps(t, config, folder, p, workers, bar.stage)
            expected = [vision_die_values(reference, values, plan)
                        for plan in vision_plans(config, len(got))]
            points += judged([VISION + n for n in vision_names(config)], expected, got,
                             thresholds)
        got = language_taps(t, p, workers, bar.stage)
        expected = [die_values(reference, values, die_plan(t, d), head_dim(reference.config))
                    for d in range(t.dies)]
    points += judged([*point_names(t.config["num_layers"]), "logits"], expected, got, thresholds)
    return CompareReport(str(t.root), str(folder), p.ids, t.config["num_layers"], t.dies,
                         thresholds, points, logits, str(log),
                         t.config["vision"]["dies"] if vlm else 0)
