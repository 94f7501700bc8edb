"""manifest.json: every file of a folder tyllm wrote, with its sha256 and the versions that
produced it. Its `format` tag says what tyllm wrote (a tree, a checkpoint); a folder is tyllm's
to replace only when its manifest carries the tag and lists exactly the files present."""

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from tyllm.artifacts.layout import MANIFEST
from tyllm.errors import ArtifactError

FORMAT_VERSION = 1
TREE_FORMAT = "tyllm.tree"
CHECKPOINT_FORMAT = "tyllm.checkpoint"
TOOL_PACKAGES = ("tyllm", "torch", "apache-tvm", "transformers", "onnx", "onnxruntime")
STAGING_MARKER = ".tyllm-staging"  # inside a staging folder only; never listed


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


def present_files(root: Path) -> list[str]:
    """Every file below `root` (links included), relative, except the manifest and the
    staging marker."""
    own = {root / MANIFEST, root / STAGING_MARKER}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p not in own)


def write_manifest(root: Path, kind: str = TREE_FORMAT) -> dict:
    manifest = {
        "format": kind,
        "format_version": FORMAT_VERSION,
        "producer": tool_versions(),
        "files": {name: {"sha256": sha256_file(root / name), "size": (root / name).stat().st_size}
                  for name in present_files(root)},
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def inside(root: Path, name: str) -> Path:
    """`root / name`, refused unless `name` is a relative path that resolves (links followed)
    inside `root`: nothing a document names may reach outside the tree."""
    if (not isinstance(name, str) or not name or "\0" in name
            or PurePosixPath(name).is_absolute()):
        raise ArtifactError(f"{root} names the file {name!r}, which is not a path inside the "
                            f"tree: the tree was edited or is not a tyllm tree; recompile it.")
    path = root / name
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root) or ".." in PurePosixPath(name).parts:
        raise ArtifactError(f"{root} names {name!r}, which lies outside the tree: tyllm loads "
                            f"nothing from outside the tree it opens. Recompile the tree.")
    return path


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST}: it is not a complete tyllm artifact tree "
                            f"(a compile may have failed). Run `tyllm compile` again.")
    manifest = parse_manifest(path)
    if manifest is None or manifest.get("format") not in (TREE_FORMAT, None):
        raise ArtifactError(f"{path} is not a tyllm tree manifest: pass the `<N>die` folder "
                            f"that `tyllm compile` wrote.")
    for name, entry in manifest["files"].items():
        inside(root, name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise ArtifactError(f"{path} lists {name!r} without a sha256 and size: the manifest "
                                f"is damaged or edited; recompile the tree.")
    return manifest


def parse_manifest(path: Path) -> dict | None:
    """The manifest's content, or None when it is no tyllm manifest (not JSON, no file list)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    files = document.get("files") if isinstance(document, dict) else None
    return document if isinstance(files, dict) else None


def written_by_tyllm(folder: Path, kind: str) -> bool:
    """True when `folder`'s manifest carries tyllm's `kind` tag and lists exactly the files
    present: only then may tyllm replace the folder."""
    manifest = parse_manifest(folder / MANIFEST)
    return (manifest is not None and manifest.get("format") == kind
            and sorted(manifest["files"]) == present_files(folder))


def verify_files(root: Path, manifest: dict, names: list[str] | None = None) -> None:
    """Checks size and sha256 of the listed files (all files when `names` is None)."""
    for name in names if names is not None else list(manifest["files"]):
        entry, path = manifest["files"].get(name), inside(root, name)
        if entry is None:
            raise ArtifactError(f"{path} is not listed in {root / MANIFEST}: the tree was edited; "
                                f"recompile it.")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing from the artifact tree; recompile it.")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path} does not match its sha256 in {MANIFEST}: the file is "
                                f"corrupted, truncated or edited. Recompile the tree "
                                f"(tyllm compile).")
