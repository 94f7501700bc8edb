"""The emulated multi-die runtime: `load(tree)` returns a session that generates greedily."""

from pathlib import Path

from tyllm.artifacts.manifest import verify_files
from tyllm.errors import TyllmError
from tyllm.runtime.session import Session
from tyllm.runtime.tree import Tree
from tyllm.runtime.workers import WORKER_KINDS, exit_if_bootstrapping


def load(artifacts_path, workers: str = "threads", dies: int | None = None) -> Session:
    """Opens the `<N>die` tree and starts one worker per die ("threads" or "processes")."""
    if workers not in WORKER_KINDS:
        raise TyllmError(f"Unknown workers={workers!r}; choose one of {list(WORKER_KINDS)}.")
    if workers == "processes":
        exit_if_bootstrapping()  # before a spawned copy of an unguarded script hashes the tree
    tree = Tree(Path(artifacts_path), dies=dies)
    verify_files(tree.root, tree.manifest)  # sha256 of every file, before anything is loaded
    if tree.config["kind"] == "vlm":
        from tyllm.vlm.load import load_vlm

        return load_vlm(tree, WORKER_KINDS[workers])
    return Session(tree, WORKER_KINDS[workers](tree))


__all__ = ["Session", "load"]
