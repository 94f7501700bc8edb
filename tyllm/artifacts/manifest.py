"""manifest.json: every file of a tree with its sha256, and the versions that produced it."""

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tyllm.artifacts.layout import MANIFEST
from tyllm.errors import ArtifactError

FORMAT_VERSION = 1
TOOL_PACKAGES = ("tyllm", "torch", "apache-tvm", "transformers", "onnx", "onnxruntime")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_version(name: str) -> str | None:
    """The installed version of a distribution (tyllm's from its source), None if absent."""
    from tyllm import __version__

    try:
        return __version__ if name == "tyllm" else version(name)
    except PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    return {name: package_version(name) or "not installed" for name in TOOL_PACKAGES}


def write_manifest(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format_version": FORMAT_VERSION,
        "producer": tool_versions(),
        "files": {p.relative_to(root).as_posix(): {"sha256": sha256_file(p),
                                                   "size": p.stat().st_size} for p in files},
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST}: it is not a complete tyllm artifact tree "
                            f"(a compile may have failed). Run `tyllm compile` again.")
    return json.loads(path.read_text())


def verify_files(root: Path, manifest: dict, names: list[str] | None = None) -> None:
    """Checks size and sha256 of the listed files (all files when `names` is None)."""
    for name in names if names is not None else list(manifest["files"]):
        entry, path = manifest["files"].get(name), root / name
        if entry is None or not path.is_file():
            raise ArtifactError(f"{path} is missing from the artifact tree; recompile it.")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path} does not match its sha256 in {MANIFEST}: the file is "
                                f"corrupted or truncated. Recompile the tree (tyllm compile).")
