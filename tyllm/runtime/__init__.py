"""The emulated multi-die runtime: `load(tree)` returns a session that generates greedily.

Importing the package is light (the CLI reads `worker_kinds` through it); `load` brings in the
session, the workers and the tree's backend."""

from pathlib import Path


def load(artifacts_path, workers: str = "threads", dies: int | None = None):
    """Opens the `<N>die` tree and starts one worker per die ("threads" or "processes"), or
    joins the torchrun job whose ranks are the dies ("distributed": tyllm/runtime/distributed/;
    only rank 0 gets the session back)."""
    from tyllm.artifacts.manifest import verify_files
    from tyllm.errors import TyllmError
    from tyllm.runtime.session import Session
    from tyllm.runtime.tree import Tree
    from tyllm.runtime.worker_kinds import DISTRIBUTED, RUN_WORKER_NAMES
    from tyllm.runtime.workers import WORKER_KINDS, exit_if_bootstrapping

    if workers not in RUN_WORKER_NAMES:
        raise TyllmError(f"Unknown workers={workers!r}; choose one of {list(RUN_WORKER_NAMES)}.")
    if workers == "processes":
        exit_if_bootstrapping()  # before a spawned copy of an unguarded script hashes the tree
    tree = Tree(Path(artifacts_path), dies=dies)
    if workers == DISTRIBUTED:  # each rank checks the files it loads itself
        from tyllm.runtime.distributed import load_ranks

        return load_ranks(tree)
    verify_files(tree.root, tree.manifest)  # sha256 of every file, before anything is loaded
    if tree.config["kind"] == "vlm":
        from tyllm.runtime.vlm.load import load_vlm

        return load_vlm(tree, WORKER_KINDS[workers])
    return Session(tree, WORKER_KINDS[workers](tree))


def __getattr__(name: str):
    if name == "Session":
        from tyllm.runtime.session import Session

        return Session
    raise AttributeError(f"module 'tyllm.runtime' has no attribute {name!r}")


__all__ = ["Session", "load"]
