"""Dies as ranks of a torch.distributed job (workers="distributed"): `torchrun ... -m tyllm run
TREE --workers distributed` on every host; rank r runs die r (ranks.py), joined through the
job's store (job.py) and gloo (group.py), messages without pickle (message.py). An engine
(vLLM's, on rank 0) drives them the same way: its worker loads the session as rank 0 while the
other ranks wait in `follow_rank_0`."""


def follow_rank_0(tree_path) -> None:
    """For a script torchrun starts on every host, whose rank 0 runs an engine on the tree
    (vLLM's `LLM(...)` with tyllm workers "distributed", or `tyllm serve`): ranks 1..N-1 serve
    their die here until the engine stops, then leave the process (SystemExit(0)); rank 0
    returns at once, and its engine joins the job as rank 0."""
    from pathlib import Path

    from tyllm.runtime.distributed.job import Job
    from tyllm.runtime.tree import Tree

    if Job.from_env().rank != 0:
        load_ranks(Tree(Path(tree_path)))  # leaves the process when rank 0 stops


def check_engine_rank() -> None:
    """An engine on distributed dies runs on rank 0 only."""
    from tyllm.errors import TyllmError
    from tyllm.runtime.distributed.job import Job

    rank = Job.from_env().rank
    if rank != 0:
        raise TyllmError(f"An engine on distributed dies runs on rank 0, but this is rank {rank}: "
                         f"call tyllm.runtime.distributed.follow_rank_0(TREE) before LLM(...) "
                         f"(the other ranks serve their die there), or start `tyllm serve TREE "
                         f"--workers distributed` on every host.")


def load_ranks(tree):
    """Rank 0: the session over every rank's die. Other ranks: serve their die, then leave
    the process (SystemExit) when rank 0 closes its session."""
    from tyllm.errors import TyllmError
    from tyllm.runtime.die import DieRunner
    from tyllm.runtime.distributed.ranks import start
    from tyllm.runtime.placement import pin_process
    from tyllm.runtime.session import Session

    if tree.config["kind"] == "vlm":
        raise TyllmError(f"{tree.root} is a VLM tree: workers=\"distributed\" runs text trees "
                         f"for now; use workers=\"processes\" on one host.")

    def pin(job) -> None:
        pin_process(job.local_rank, job.local_world, tree.backend)

    return Session(tree, start(tree, DieRunner, pin))
