"""Dies as workers: threads in this process, or one process per die with a shared-memory
all-reduce between them.

Both kinds speak the same little protocol: (call, args) -> ("ok", logits) | ("error", text),
and "stop", where call is one of RUNNER_CALLS: "step" (one sequence), "rows" (a batched
call), "verify" (every row's logits: speculative decoding, tyllm/speculate/), "copy_kv" /
"drop_slot" (kept prefixes: tyllm/runtime/session.py), "store_blocks" / "load_blocks" (vLLM
prefix caching: tyllm/vllm_ext/prefix_blocks.py). A call runs on every die at once; the
caller concatenates the vocab slices. A runner class may name other calls (`calls`:
tyllm/compare/taps.py's TapRunner).

A die that fails (an error in its runner, or its process gone: killed, crashed) fails the
session: the others are released from the collective (threads) or stopped (processes), the
error names that die, and every later call raises it again; `close` still releases everything.
"""

import multiprocessing
import queue
import signal
import threading
import traceback
from pathlib import Path

import torch

from tyllm.errors import DieFailure, TyllmError
from tyllm.runtime import collective
from tyllm.runtime.placement import pin_current_thread, pin_process
from tyllm.runtime.tree import Tree
from tyllm.runtime.wire import from_wire, to_wire
from tyllm.runtime.worker_kinds import WORKER_NAMES

RUNNER_CALLS = ("step", "rows", "verify", "copy_kv", "drop_slot", "store_blocks", "load_blocks")


AFTER_FAILURE = "the session cannot go on: load the tree again"


def serve(make_runner, receive, reply) -> None:
    """A die's command loop."""
    try:
        runner = make_runner()
    except Exception:
        reply(("error", traceback.format_exc()))
        return
    reply(("ok", None))
    while (message := receive()) != "stop":
        try:
            if message[0] not in getattr(runner, "calls", RUNNER_CALLS):
                raise ValueError(f"unknown die call {message[0]!r}")
            reply(("ok", getattr(runner, message[0])(*message[1])))
        except Exception:
            reply(("error", traceback.format_exc()))


def gather(polls: list, on_error, names: list[str]) -> list:
    """Waits for one reply per die. At the first failure `on_error` releases the dies blocked
    in a collective, so that every die answers, then that first failure is raised (the others
    are its consequences), naming its die (`names`)."""
    replies: list = [None] * len(polls)
    first = None
    while any(r is None for r in replies):
        for i, poll in enumerate(polls):
            if replies[i] is None and (reply := poll()) is not None:
                replies[i] = reply
                if reply[0] != "ok" and first is None:
                    first = i
                    on_error()
    if first is not None:
        raise DieFailure(failure_text(names[first], *replies[first]))
    return [value for _, value in replies]


def failure_text(name: str, status: str, detail: str) -> str:
    """One die's failure: its process ended (`status` "exited", `detail` how), or its runner
    raised (`detail` the traceback)."""
    if status == "exited":
        return f"{name} {detail}; the other dies were stopped and {AFTER_FAILURE}."
    return f"{name} failed; {AFTER_FAILURE}. Its error:\n{detail}"


def _poll_queue(box: queue.Queue):
    try:
        return box.get(timeout=0.01)
    except queue.Empty:
        return None


def default_runner():
    from tyllm.runtime.die import DieRunner

    return DieRunner


class DieCalls:
    """What a session calls on its dies; `call(name, *args)` runs on every die at once. After
    a die failed, every call raises that failure again (`failure`)."""

    failure: DieFailure | None = None

    def step(self, *args) -> list[torch.Tensor]:
        return self.call("step", *args)

    def rows(self, *args) -> list[torch.Tensor]:
        return self.call("rows", *args)

    def call(self, name: str, *args) -> list[torch.Tensor]:
        if self.failure is not None:
            raise DieFailure(str(self.failure))
        try:
            return self.call_dies(name, *args)
        except DieFailure as e:
            self.failure = e
            raise

    def call_dies(self, name: str, *args) -> list[torch.Tensor]:
        raise NotImplementedError


class ThreadWorkers(DieCalls):
    """`runner(tree, rank)` is built in each worker; rank r runs on physical die placement[r]
    (default: rank r on die r, one rank per die of the tree)."""

    def __init__(self, tree: Tree, runner=None, placement: list[int] | None = None,
                 native: bool = True):
        runner = runner or default_runner()
        placement = list(range(tree.dies)) if placement is None else list(placement)
        slot = getattr(runner, "all_reduce_bytes", all_reduce_bytes)(tree)
        self.group = collective.thread_group(len(placement), slot, native)
        self.names = [f"die {p}" for p in placement]
        self.inboxes = [queue.Queue() for _ in placement]
        self.outboxes = [queue.Queue() for _ in placement]
        self.threads = [threading.Thread(target=self._die_main, args=(tree, r, p, runner),
                                         daemon=True, name=f"tyllm-{runner.__name__}{r}")
                        for r, p in enumerate(placement)]
        for t in self.threads:
            t.start()
        try:
            self._gather()
        except Exception:
            self.close()
            raise

    def _die_main(self, tree, rank, physical, runner_cls):
        pin_current_thread(physical, tree.dies, tree.backend)
        with collective.bind_member(self.group.member(rank)):
            serve(lambda: runner_cls(tree, rank), self.inboxes[rank].get,
                  self.outboxes[rank].put)

    def _gather(self) -> list:
        return gather([lambda b=box: _poll_queue(b) for box in self.outboxes], self.group.abort,
                      self.names)

    def call_dies(self, name: str, *args) -> list[torch.Tensor]:
        for box in self.inboxes:
            box.put((name, args))
        return self._gather()

    def close(self) -> None:
        for box in self.inboxes:
            box.put("stop")
        for t in self.threads:
            t.join(timeout=10)
        if not any(t.is_alive() for t in self.threads):  # a stuck die may still read the group
            self.group.unlink()


def _process_main(root: str, rank: int, physical: int, dies: int, group, conn, runner) -> None:
    pin_process(physical, dies, Tree(Path(root)).backend)
    try:
        with collective.bind_member(group.member(rank)):
            serve(lambda: runner(Tree(Path(root)), rank), lambda: from_wire(conn.recv()),
                  lambda message: conn.send(to_wire(message)))
    finally:
        group.detach()


def all_reduce_bytes(tree: Tree) -> int:
    """The largest all-reduce of a step: hidden states of the most rows a graph takes (the
    longest graph, the largest batch at the decode length, or a batched verify graph),
    4-byte elements."""
    rows = max(g.get("batch", 1) * g["seq_len"] for g in tree.buffers["graphs"])
    return tree.config["hidden_size"] * rows * 4


UNGUARDED_EXIT = 86  # a die process found itself re-running the user's unguarded script
UNGUARDED = ("die processes could not start: the script that loads the tree runs again in every "
             "die process (Python's spawn start method) and has no main guard. Put the code that "
             "calls tyllm.runtime.load(..., workers=\"processes\") under "
             "`if __name__ == \"__main__\":`, or use workers=\"threads\".")


def exit_if_bootstrapping() -> None:
    """Inside a spawned process that is still importing the user's script, starting die
    processes would fail with a confusing error in every child: leave with a known code."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(UNGUARDED_EXIT)


class ProcessWorkers(DieCalls):
    """Same contract as ThreadWorkers; `runner` must be importable by name (spawned processes)."""

    def __init__(self, tree: Tree, runner=None, placement: list[int] | None = None,
                 native: bool = True):
        exit_if_bootstrapping()
        runner = runner or default_runner()
        placement = list(range(tree.dies)) if placement is None else list(placement)
        self.placement, ranks = placement, len(placement)
        ctx = multiprocessing.get_context("spawn")
        slot = getattr(runner, "all_reduce_bytes", all_reduce_bytes)(tree)
        self.group = collective.process_group(ranks, slot, ctx, native)
        pipes = [ctx.Pipe() for _ in placement]
        self.conns = [parent for parent, _ in pipes]
        self.procs = [ctx.Process(target=_process_main, daemon=True, name=f"tyllm-die{p}",
                                  args=(str(tree.root), r, p, tree.dies, self.group, pipes[r][1],
                                        runner))
                      for r, p in enumerate(placement)]
        for p in self.procs:
            p.start()
        for _, child in pipes:  # the die's end lives in its process: its exit reads as EOF here
            child.close()
        try:
            self._gather()
        except DieFailure:
            self.close()
            if any(p.exitcode == UNGUARDED_EXIT for p in self.procs):
                raise TyllmError(UNGUARDED) from None
            raise

    def _gather(self) -> list:
        pairs = zip(self.conns, self.procs, strict=True)
        polls = [lambda c=c, p=p: self._poll(c, p) for c, p in pairs]
        return gather(polls, self.kill, [f"die {p} (process {proc.pid})" for p, proc
                                         in zip(self.placement, self.procs, strict=True)])

    @staticmethod
    def _poll(conn, proc):
        try:
            if conn.poll(0.01):
                return from_wire(conn.recv())
        except (EOFError, OSError):
            pass
        else:
            if proc.is_alive():
                return None
        return ("exited", how_it_ended(proc))

    def call_dies(self, name: str, *args) -> list[torch.Tensor]:
        for c in self.conns:
            try:
                c.send((name, to_wire(args)))
            except OSError:  # its process is gone: the gather below names it and how it ended
                pass
        return self._gather()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def close(self) -> None:
        """Stops the dies (kills any that do not stop), then releases the group's memory."""
        for c in self.conns:
            try:
                c.send("stop")
            except OSError:  # that die is gone already
                pass
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        for c in self.conns:
            c.close()
        self.group.unlink()


def how_it_ended(proc) -> str:
    """How a die process that closed its pipe ended: its exit code or the signal that killed
    it."""
    proc.join(timeout=5)  # reaped: its exit code is known
    code = proc.exitcode
    if code is None:
        return "closed its pipe but still runs"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by signal {signal.Signals(-code).name} ({-code})"
    except ValueError:
        return f"was killed by signal {-code}"


WORKER_KINDS = dict(zip(WORKER_NAMES, (ThreadWorkers, ProcessWorkers), strict=True))
