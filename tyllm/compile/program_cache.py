"""Compiled programs kept across compiles (`$TYLLM_CACHE/programs`, default
~/.cache/tyllm/programs).

Weights are graph inputs, so a die's program depends on the model's config, the die's shapes,
the graph length, KV size, dtype, target and the code that builds and lowers it, never on the
weight values. Each program is stored under a fingerprint of all of these: a compile killed at
any point and run again compiles only the programs it had not finished, and a second tree of the
same model (other seq lens, other dies of the same shape) reuses the ones it shares.
"""

import hashlib
import importlib
import json
import os
import shutil
from functools import cache
from pathlib import Path

from tyllm.artifacts.manifest import tool_versions
from tyllm.cache import cache_root

FORMAT = 1
LIBRARY, TWIN, IO = "program.so", "program.onnx", "io.json"
CODE = ("tyllm", "tyllm.backends")  # all of it: graphs trace code from models, quant, shard,
# capture
VOLATILE_CONFIG = ("_name_or_path", "_commit_hash", "transformers_version", "name_or_path")


def programs_root() -> Path:
    return cache_root() / "programs"


@cache
def code_digest() -> str:
    """sha256 of the source that determines a program (a changed schedule is a new program)."""
    digest = hashlib.sha256()
    for package in CODE:
        folder = Path(importlib.import_module(package).__file__).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(folder).as_posix()}".encode()
                          + path.read_bytes())
    return digest.hexdigest()


def fingerprint(hf_config: dict, facts: dict) -> str:
    config = {k: v for k, v in hf_config.items() if k not in VOLATILE_CONFIG}
    document = {"format": FORMAT, "config": config, "facts": facts, "tools": tool_versions(),
                "code": code_digest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def lookup(key: str, need_twin: bool) -> tuple[Path, dict] | None:
    """(folder, io) of a stored program; None if absent, without a needed ONNX twin, or the
    cache cannot be read (a cache problem never fails a compile)."""
    try:
        folder = programs_root() / key
        io = json.loads((folder / IO).read_text())
        whole = (folder / LIBRARY).is_file() and (not need_twin or (folder / TWIN).is_file())
    except (OSError, ValueError, RuntimeError):
        return None
    return (folder, io) if whole else None


def files(key: str, need_twin: bool) -> tuple[Path, Path, dict] | None:
    """(library, ONNX twin, io) of a stored program, as `lookup` finds it."""
    hit = lookup(key, need_twin)
    return None if hit is None else (hit[0] / LIBRARY, hit[0] / TWIN, hit[1])


def store(key: str, library: Path, twin: Path | None, io: dict) -> None:
    """Keeps a freshly compiled program, written beside its place and renamed, so a reader sees
    a whole entry or none. A published entry is never removed or rewritten (another compile may
    be reading it); one without an ONNX twin gains one under a temporary name, then renamed.
    A cache that cannot be written is skipped: the compile goes on."""
    try:
        folder = programs_root() / key
        if folder.is_dir():
            if twin is not None and not (folder / TWIN).is_file():
                partial = folder / f".{TWIN}.{os.getpid()}"
                shutil.copyfile(twin, partial)
                os.replace(partial, folder / TWIN)
            return
        staging = folder.with_name(f".{key}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(library, staging / LIBRARY)
        if twin is not None:
            shutil.copyfile(twin, staging / TWIN)
        (staging / IO).write_text(json.dumps(io))
        try:
            os.replace(staging, folder)
        except OSError:  # another compile published the same program first
            shutil.rmtree(staging, ignore_errors=True)
    except (OSError, RuntimeError):
        return


def usage() -> tuple[Path, int, int]:
    """(location, programs stored, bytes)."""
    root = programs_root()
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] \
        if root.is_dir() else []
    size = 0
    for entry in entries:
        for f in entry.glob("*"):
            try:
                size += f.stat().st_size
            except OSError:  # removed meanwhile
                pass
    return root, len(entries), size


def clear() -> int:
    """Removes every stored program; returns the bytes freed."""
    _, _, size = usage()
    shutil.rmtree(programs_root(), ignore_errors=True)
    return size
