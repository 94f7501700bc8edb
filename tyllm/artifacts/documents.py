"""The JSON documents of a tree: config.json, buffer_config.json (schemas: artifacts_schema/)."""

import json
from pathlib import Path

from tyllm.errors import ArtifactError
from tyllm.shard.plan import DiePlan

FORMAT_VERSION = 2  # 2: step graphs take a history_mask (KV windows)


def _range(r: range) -> list[int]:
    return [r.start, r.stop]


def plan_json(plan: DiePlan) -> dict:
    return {"die": plan.die, "q_heads": _range(plan.q_heads), "kv_heads": _range(plan.kv_heads),
            "ffn": _range(plan.ffn), "vocab": _range(plan.vocab)}


def eos_token_ids(model_path: Path, config) -> list[int]:
    ids = getattr(config, "eos_token_id", None)
    generation = model_path / "generation_config.json"
    if generation.is_file():
        from tyllm.checkpoint import read_json_file

        ids = read_json_file(generation).get("eos_token_id", ids)
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else list(ids)


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=1))


def read_json(path: Path, kind: str) -> dict:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: this is not a complete tyllm tree; recompile.")
    document = json.loads(path.read_text())
    if document.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format_version {document.get('format_version')}, this "
                            f"tyllm reads {FORMAT_VERSION}: recompile the tree with this tyllm.")
    if kind == "config" and document.get("kind") not in ("llm", "vlm"):
        raise ArtifactError(f"{path} describes a {document.get('kind')!r} tree, not an LLM tree.")
    return document
