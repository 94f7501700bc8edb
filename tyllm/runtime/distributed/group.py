"""The ranks' process group: gloo over TCP, made directly (no global default group), listening
on this host's address toward the job's store only.

Every blocking operation is waited for by polling, so that a failure anywhere ends it at once:
a rank whose die fails posts its error in the job's store (`fail`) and every other rank, in
whatever it waits for, raises that error (`RankFailure`); a rank whose process ends says
nothing, but its connections close and gloo raises on the others, which then name the ranks
whose process no longer answers (liveness.py: asked without the store, which may have ended
with that rank's host). The die all-reduce is an all-gather summed in die order: the sums are
bit-identical to those of dies on one host (tyllm/runtime/collective.py)."""

import signal
import threading
import time
from datetime import timedelta

import torch

from tyllm.runtime.collective import Member, sum_in_die_order
from tyllm.runtime.distributed.liveness import Liveness, gone

FAILURES = "failures"  # a counter: the n-th failure is posted under failure/n
CHECK_EVERY_S = 0.02


class RankFailure(RuntimeError):
    """A rank failed; every rank of the job stops."""


class RankGroup:
    def __init__(self, job, store, ranks: dict[int, dict], timeout_s: float,
                 liveness: Liveness):
        import torch.distributed as dist

        self.job, self.store, self.ranks, self.timeout_s = job, store, ranks, timeout_s
        self.liveness = liveness  # open while this process runs: the others ask it
        options = dist.ProcessGroupGloo._Options()
        options._timeout = timedelta(seconds=timeout_s)
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=job.local_address())]
        self.pg = dist.ProcessGroupGloo(dist.PrefixStore("gloo/", store), job.rank, job.world,
                                        options)
        self._next_check = 0.0
        self.failure: RankFailure | None = None  # the job's failure, once this rank saw it

    # -- failures -----------------------------------------------------------------------------
    def fail(self, text: str) -> RankFailure:
        """Posts this rank's failure for every other rank to raise."""
        failure = RankFailure(f"{self.name(self.job.rank)} failed: {text.rstrip().rstrip('.')}")
        self._post(failure)
        return failure

    def _post(self, failure: RankFailure) -> None:
        try:
            n = self.store.add(FAILURES, 1)
            self.store.set(f"failure/{n}", str(failure))
        except RuntimeError:  # the store is gone: every rank finds out by itself
            pass

    def posted_failure(self) -> RankFailure | None:
        """The job's first posted failure; if the store is gone, what asking the ranks says."""
        try:
            if self.store.add(FAILURES, 0) == 0:
                return None
            return RankFailure(self.store.get("failure/1").decode())
        except RuntimeError:
            return self._gone_or(f"the job's store at {self.job.endpoint} stopped answering: "
                                 f"the host that runs it (the first torchrun agent) ended or "
                                 f"lost its network")

    def name(self, rank: int) -> str:
        record = self.ranks.get(rank, {})
        return f"die {rank} (rank {rank} on {record.get('host', '?')}, pid {record.get('pid')})"

    def wait(self, work, what: str) -> None:
        """Waits for a gloo operation, raising the job's first posted failure meanwhile."""
        deadline = time.monotonic() + self.timeout_s
        while not work.is_completed():
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + CHECK_EVERY_S
                if (failure := self.posted_failure()) is not None:
                    raise self._seen(failure)
            if now > deadline:
                raise self._seen(self._gone_or(
                    f"{what} waited {self.timeout_s:g} s for the other ranks: a host stopped "
                    f"answering (the job's store is {self.job.endpoint})"))
            time.sleep(0.0001)
        try:
            work.wait()
        except RuntimeError:
            raise self._seen(self._after_closed_connection()) from None

    def _seen(self, failure: RankFailure) -> RankFailure:
        """Kept: raised through a graph's all-reduce, it reaches the caller as another type."""
        self.failure = self.failure or failure
        return self.failure

    def _after_closed_connection(self) -> RankFailure:
        """A connection closed: a failure posted before it explains it (a rank posts before
        its process ends); else the ranks whose process is gone are named, and posted."""
        if (failure := self.posted_failure()) is not None:
            return failure
        failure = self._gone_or("a connection between ranks closed while every rank still "
                                "answers: check the network between the hosts")
        self._post(failure)
        return failure

    def _gone_or(self, otherwise: str) -> RankFailure:
        """Names the ranks whose process no longer answers, else says `otherwise`."""
        ended = gone({r: (record["address"], record["probe"])
                      for r, record in self.ranks.items() if r != self.job.rank})
        if not ended:
            return RankFailure(otherwise)
        return RankFailure(f"{', '.join(map(self.name, ended))} ended: its process is gone "
                           f"(killed, crashed, or its host lost)")

    def explain_stop_signals(self) -> None:
        """torchrun's agent stops the other ranks of a host with SIGTERM when one of them
        ends: this rank then says why the job ends before it does (where the signal is still
        Python's default, in the main thread)."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def stopped(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends it at once
            raise self._seen(self.posted_failure() or self._gone_or(
                f"{self.name(self.job.rank)} was stopped by SIGTERM (torchrun's agent stops "
                f"a host's ranks when one of them ends, or the job was cancelled)"))

        signal.signal(signal.SIGTERM, stopped)

    # -- transport ----------------------------------------------------------------------------
    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's `data` to every rank."""
        import torch.distributed as dist

        size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.wait(self.pg.broadcast([size], opts), "a die call")
        buffer = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None
                  else torch.empty(int(size), dtype=torch.uint8))
        if int(size):
            self.wait(self.pg.broadcast([buffer], opts), "a die call")
        return buffer.numpy().tobytes()

    def gather_bytes(self, data: bytes) -> list[bytes] | None:
        """Every rank's `data` on rank 0 (None elsewhere). Collectives only: gloo's
        point-to-point work cannot be polled."""
        import torch.distributed as dist

        world = self.job.world
        size = torch.tensor([len(data)], dtype=torch.int64)
        sizes = [torch.empty(1, dtype=torch.int64) for _ in range(world)]
        self.wait(self.pg.allgather([sizes], [size]), "the replies")
        longest = max(int(s) for s in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        mine[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else 0
        opts = dist.GatherOptions()
        opts.rootRank = 0
        parts = [[torch.empty(longest, dtype=torch.uint8) for _ in range(world)]]
        self.wait(self.pg.gather(parts if self.job.rank == 0 else [], [mine], opts),
                  "the replies")
        if self.job.rank != 0:
            return None
        return [p[:int(s)].numpy().tobytes() for p, s in zip(parts[0], sizes, strict=True)]

    def member(self) -> "RankMember":
        return RankMember(self)


class RankMember(Member):
    def __init__(self, group: RankGroup):
        self.group = group
        self.calls = self.bytes_received = 0  # counted for the benchmark

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.group.job.world)]
        self.group.wait(self.group.pg.allgather([parts], [x]), "the die all-reduce")
        self.calls += 1
        self.bytes_received += (len(parts) - 1) * x.numel() * x.element_size()
        return sum_in_die_order(parts)
