"""Compiled programs kept across compiles (`$TYLLM_CACHE/programs`, default
~/.cache/tyllm/programs).

Weights are graph inputs, so a die's program depends on the model's config, the die's shapes,
the graph length, KV size, dtype, target and the code that builds and lowers it, never on the
weight values. Each program is stored under a fingerprint of all of these: a compile killed at
any point and run again compiles only the programs it had not finished, and a second tree of the
same model (other seq lens, other dies of the same shape) reuses the ones it shares.
"""

import hashlib
import json
import os
import shutil
from functools import cache
from pathlib import Path

from tyllm.artifacts.manifest import tool_versions
from tyllm.cache import cache_root

FORMAT = 1
LIBRARY, TWIN, IO = "program.so", "program.onnx", "io.json"
CODE = ("tyllm/models", "tyllm/capture", "backends")  # what builds, captures and lowers a graph
VOLATILE_CONFIG = ("_name_or_path", "_commit_hash", "transformers_version", "name_or_path")


def programs_root() -> Path:
    return cache_root() / "programs"


@cache
def code_digest() -> str:
    """sha256 of the source that determines a program (a changed schedule is a new program)."""
    top, digest = Path(__file__).resolve().parents[1], hashlib.sha256()
    for folder in CODE:
        for path in sorted((top / folder).rglob("*.py")):
            digest.update(path.relative_to(top).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def fingerprint(hf_config: dict, facts: dict) -> str:
    config = {k: v for k, v in hf_config.items() if k not in VOLATILE_CONFIG}
    document = {"format": FORMAT, "config": config, "facts": facts, "tools": tool_versions(),
                "code": code_digest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def lookup(key: str, need_twin: bool) -> tuple[Path, dict] | None:
    """(folder, io) of a stored program; None if absent or without a needed ONNX twin."""
    folder = programs_root() / key
    try:
        io = json.loads((folder / IO).read_text())
    except (OSError, ValueError):
        return None
    if not (folder / LIBRARY).is_file() or (need_twin and not (folder / TWIN).is_file()):
        return None
    return folder, io


def store(key: str, library: Path, twin: Path | None, io: dict) -> None:
    """Keeps a freshly compiled program; written beside its place and renamed, so a reader sees
    a whole entry or none. An entry already there is kept."""
    folder = programs_root() / key
    if lookup(key, twin is not None) is not None:
        return
    staging = folder.with_name(f".{key}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(library, staging / LIBRARY)
    if twin is not None:
        shutil.copyfile(twin, staging / TWIN)
    (staging / IO).write_text(json.dumps(io))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def usage() -> tuple[Path, int, int]:
    """(location, programs stored, bytes)."""
    root = programs_root()
    entries = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    size = sum(f.stat().st_size for p in entries for f in p.iterdir() if f.is_file())
    return root, len(entries), size


def clear() -> int:
    """Removes every stored program; returns the bytes freed."""
    _, _, size = usage()
    shutil.rmtree(programs_root(), ignore_errors=True)
    return size
