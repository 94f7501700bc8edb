"""Dies as ranks of a torchrun job (workers="distributed"): one process per die, on one host or
several, joined by gloo (group.py) after a join through the job's store (job.py).

Rank 0 holds the session and die 0; `runtime.load(tree, workers="distributed")` returns its
session there. Every other rank serves its die: it takes each call rank 0 broadcasts, runs it
(the all-reduces inside meet the other dies'), and sends its logits slice back; at the
session's close it leaves the process (SystemExit(0)), so the rest of a script that rank 0 runs
never runs on the others. Each rank checks and loads only the tree's shared files and its own
die's: a host may hold a copy of the tree without the other hosts' dies."""

import traceback

from tyllm.errors import TyllmError
from tyllm.runtime import collective
from tyllm.runtime.distributed.group import RankFailure, RankGroup
from tyllm.runtime.distributed.job import Job, join
from tyllm.runtime.distributed.liveness import Liveness
from tyllm.runtime.distributed.message import decode, encode
from tyllm.runtime.workers import AFTER_FAILURE, RUNNER_CALLS, DieCalls, DieFailure

JOIN_TIMEOUT_S = 120.0  # from this rank's start until every rank has posted its join
CALL_TIMEOUT_S = 300.0  # one die call, or one reply, before a silent host is given up on
STOP = "stop"


def other_dies_files(tree, die: int) -> set[str]:
    """The files only other dies' graphs read."""
    keys = ("weights", "constants", "graph_params", "library", "onnx", "params")
    return {g[k] for g in tree.buffers["graphs"] if g["die"] != die for k in keys
            if g.get(k)} - {g[k] for g in tree.buffers["graphs"] if g["die"] == die
                            for k in keys if g.get(k)}


def check_own_files(tree, die: int) -> None:
    """The shared files and this rank's die's, by sha256; a host whose copy lacks this die
    (torchrun hands ranks out by host address, not by which dies a host holds) is told so."""
    from tyllm.artifacts.manifest import verify_files

    skip = other_dies_files(tree, die)
    names = [n for n in tree.manifest["files"] if n not in skip]
    if missing := [n for n in names if not (tree.root / n).is_file()]:
        raise TyllmError(f"This host's copy of the tree {tree.root} lacks {len(missing)} file(s) "
                         f"of die {die} (e.g. {missing[0]}), which torchrun gave this host as "
                         f"rank {die}: copy the whole tree to every host (ranks go to hosts by "
                         f"their address, known only when the job starts).")
    verify_files(tree.root, tree.manifest, names)


def start(tree, runner_cls, pin):
    """Joins the job; on rank 0 returns its workers, on the others serves and then exits."""
    job = Job.from_env()
    store = job.store(JOIN_TIMEOUT_S)
    liveness = Liveness(job.local_address())
    ranks = join(job, store, tree.root, tree.dies, JOIN_TIMEOUT_S, liveness.port)
    group = RankGroup(job, store, ranks, CALL_TIMEOUT_S, liveness)
    group.explain_stop_signals()
    try:
        check_own_files(tree, job.rank)
        pin(job)
        runner = runner_cls(tree, job.rank)
    except Exception as e:
        group.fail(str(e) if isinstance(e, RuntimeError | ValueError) else
                   traceback.format_exc())
        raise
    if job.rank == 0:
        return RankWorkers(group, runner)
    follow(group, runner)
    raise SystemExit(0)


def follow(group: RankGroup, runner) -> None:
    """A die's loop on ranks 1..N-1: calls from rank 0 until it stops."""
    member = group.member()
    try:
        group.gather_bytes(encode("ready"))
        while (message := decode(group.broadcast_bytes(None))) != STOP:
            name, args = message
            if name not in getattr(runner, "calls", RUNNER_CALLS):
                raise ValueError(f"unknown die call {name!r}")
            with collective.bind_member(member):
                result = getattr(runner, name)(*args)
            group.gather_bytes(encode(result))
    except Exception as e:
        raise TyllmError(f"{first_failure(group, e)}; every rank stops.") from None


def first_failure(group: RankGroup, error: Exception) -> RankFailure:
    """The job's first posted failure (this error may be its echo through a collective), else
    this rank's own, posted now for the others."""
    if isinstance(error, RankFailure):
        return error
    if group.failure is not None:  # raised inside a graph's all-reduce, seen here as another type
        return group.failure
    if (posted := group.posted_failure()) is not None:
        return posted
    return group.fail(traceback.format_exc())


class RankWorkers(DieCalls):
    """Rank 0's dies: its own in this process, the others' through the group."""

    def __init__(self, group: RankGroup, runner):
        self.group, self.runner = group, runner
        self.member = group.member()
        try:
            group.gather_bytes(encode("ready"))
        except RankFailure as e:
            raise DieFailure(f"{e}; {AFTER_FAILURE}.") from None

    def call_dies(self, name: str, *args) -> list:
        group = self.group
        try:
            group.broadcast_bytes(encode((name, args)))
            with collective.bind_member(self.member):
                mine = getattr(self.runner, name)(*args)
            replies = group.gather_bytes(encode(None))
            return [mine, *(decode(r) for r in replies[1:])]
        except Exception as e:
            self.failure = DieFailure(f"{first_failure(group, e)}; {AFTER_FAILURE}.")
            raise self.failure from None

    def close(self) -> None:
        if self.failure is None:
            try:
                self.group.broadcast_bytes(encode(STOP))
            except RankFailure:
                pass
