"""The tap points: where a tapped program records a value (tyllm/models/decoder.py and
tyllm/models/vlm/vision.py, `record`), in the order it computes them, and how each is named
to people. Language points: "embedding", "layers.{i}.{point}", "norm", "logits"; vision points
(VLM trees): "vision.input", "vision.blocks.{i}.{point}", "vision.deepstack.{j}",
"vision.merger"."""

LAYER_POINTS = ("attention.partial", "attention.output", "mlp.partial", "mlp.output",
                "layer.output")
BLOCK_POINTS = (*LAYER_POINTS[:4], "block.output")
VISION = "vision."
LABELS = {
    "embedding": "embedding (the first layer's input)",
    "attention.partial": "attention output before all-reduce",
    "attention.output": "attention output after all-reduce",
    "mlp.partial": "MLP output before all-reduce",
    "mlp.output": "MLP output after all-reduce",
    "layer.output": "hidden state (layer output)",
    "block.output": "hidden state (block output)",
    "norm": "final norm",
    "logits": "logits of the last prompt token (the die's vocabulary slice)",
    "input": "patch embedding (the first block's input)",
    "merger": "merged features (the merger's output)",
    "deepstack": "deepstack merger output",
}


def point_names(layers: int) -> list[str]:
    """Every tapped value of a language step, in compute order."""
    inner = [f"layers.{i}.{p}" for i in range(layers) for p in LAYER_POINTS]
    return ["embedding", *inner, "norm"]


def vision_point_names(blocks: int, deepstack_layers: list[int]) -> list[str]:
    """Every tapped value of a vision program, in compute order, without the "vision." prefix
    (the program's own names)."""
    names = ["input"]
    for i in range(blocks):
        names += [f"blocks.{i}.{p}" for p in BLOCK_POINTS]
        if i in deepstack_layers:
            names.append(f"deepstack.{deepstack_layers.index(i)}")
    return [*names, "merger"]


def flatten(taps: dict) -> dict:
    """A tapped program's nested record ({"layers.3": {"mlp.output": t}, "norm": t}) as flat
    names."""
    flat = {}
    for name, value in taps.items():
        if isinstance(value, dict):
            flat |= {f"{name}.{point}": t for point, t in value.items()}
        else:
            flat[name] = value
    return flat


def split(name: str) -> tuple[str, int | None, str]:
    """(tower, layer or block, point): "layers.17.mlp.output" -> ("language", 17, "mlp.output");
    "vision.blocks.2.block.output" -> ("vision", 2, "block.output"); "norm" ->
    ("language", None, "norm"); "vision.deepstack.1" -> ("vision", 1, "deepstack")."""
    tower = "vision" if name.startswith(VISION) else "language"
    rest = name.removeprefix(VISION)
    if rest.startswith(("layers.", "blocks.")):
        _, index, point = rest.split(".", 2)
        return tower, int(index), point
    if rest.startswith("deepstack."):
        return tower, int(rest.split(".")[1]), "deepstack"
    return tower, None, rest


def row_label(name: str) -> str:
    """The table row of a point: the HF module it belongs to."""
    tower, index, point = split(name)
    if tower == "vision":
        if point == "deepstack":
            return f"visual.deepstack_merger_list.{index}"
        return f"visual.blocks.{index}" if index is not None else f"visual.{point}"
    return f"model.layers.{index}" if index is not None else point


def describe(name: str, die: int | None) -> str:
    """"die 2, layer 17 (model.layers.17), MLP output after all-reduce": layers numbered as
    in the HF checkpoint, dies from 0 (a VLM's vision dies are numbered among themselves)."""
    tower, index, point = split(name)
    where = [] if die is None else [f"{'vision ' if tower == 'vision' else ''}die {die}"]
    if tower == "vision" and point != "deepstack" and index is not None:
        where.append(f"vision block {index} (visual.blocks.{index})")
    elif tower == "vision":
        where.append("vision tower")
    elif index is not None:
        where.append(f"layer {index} (model.layers.{index})")
    label = LABELS[point] + (f" {index}" if point == "deepstack" else "")
    return ", ".join([*where, label])
