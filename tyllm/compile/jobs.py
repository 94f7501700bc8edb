"""Distinct programs compiled in parallel: this process and `jobs - 1` worker processes
(`python -m tyllm.compile.worker`) take jobs from one queue. A job is a picklable callable
`job(root, target, report) -> {"io", "timings"}` that builds one die's module (its weights
read, then released before the capture), captures and lowers it into the staging tree
(tyllm/compile/steps.py::StepJob, core.py::StaticJob); tyllm/compile/programs.py schedules
them. `jobs=1` compiles everything in this process.

Workers are plain subprocesses, not multiprocessing: a user's script without an
`if __name__ == "__main__":` guard must not be run again in each worker.
"""

import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tyllm
from tyllm.compile.memory import peak_rss_mb
from tyllm.errors import TyllmError

HEADER = struct.Struct("<Q")  # the byte length of each message on a worker's pipes
# A worker's start (importing torch, TVM and ONNX: ~5 s) costs more than it saves for programs
# of fewer layers in all than this (measured: a 2-layer model's 2-die tree compiles in 7.8 s in
# one warm process, 16 s with a worker).
MIN_PARALLEL_LAYERS = 16


def worker_count(requested: int, layers: int | None = None) -> int:
    """Processes for a request's `jobs`: 0 means one per core this process may use, or just
    this process when the programs hold fewer than MIN_PARALLEL_LAYERS layers in all
    (`layers`, when known)."""
    if requested:
        return requested
    if layers is not None and layers < MIN_PARALLEL_LAYERS:
        return 1
    return len(os.sched_getaffinity(0))


def run_job(job: Callable, root: Path, target, report) -> dict:
    """`job(root, target, report)` -> {"io", "timings"}, with its seconds, process and that
    process's peak RSS."""
    start = time.perf_counter()
    result = job(root, target, report)
    return result | {"seconds": time.perf_counter() - start, "worker": os.getpid(),
                     "peak_rss_mb": peak_rss_mb()}


class Pool:
    """This process and the worker processes one compile's jobs are worth: up to `processes - 1`
    (see worker_count), started on the first `start` or `run` that needs them and kept for every
    later run of the compile (an LLM's step graphs; a VLM's vision, language, mrope and
    rope-index graphs), so each worker imports torch, TVM and ONNX once. Started before this
    process writes the weights, they import meanwhile."""

    def __init__(self, processes: int):
        self.processes, self.workers, self.failed = processes, [], False

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, kind, error, trace) -> None:
        for w in self.workers:
            w.close(kill=self.failed or kind is not None)  # after a failure, none finishes

    @property
    def count(self) -> int:
        return 1 + len(self.workers)

    def start(self, jobs: int, layers: int | None = None) -> None:
        """Starts the workers `jobs` jobs holding `layers` layers in all are worth, if fewer
        run."""
        wanted = min(worker_count(self.processes, layers), jobs)
        threads = max(1, len(os.sched_getaffinity(0)) // max(1, wanted))
        while self.count < wanted:
            self.workers.append(Worker(threads))

    def run(self, jobs: list[Callable], root: Path, target, report,
            done: Callable[[int, dict], None], layers: int | None = None) -> list[dict]:
        """Runs every job, this process taking its share, and calls `done(index, result)` in
        this thread as each finishes; returns how these jobs' programs and time split across
        processes."""
        self.start(len(jobs), layers)
        workers = self.workers[:max(0, len(jobs) - 1)]
        pending, results = queue.Queue(), queue.Queue()
        for k in range(len(jobs)):
            pending.put(k)
        if workers:
            report.announce(f"{len(jobs)} programs in {1 + len(workers)} processes")
        for w in workers:
            w.reset()
        threads = [threading.Thread(target=w.feed, args=(jobs, (root, target), pending,
                                                          results), daemon=True)
                   for w in workers]
        here, self.failed = InProcess(), True
        try:
            for t in threads:
                t.start()
            finished = here.serve(jobs, (root, target, report), pending, results, done)
            for _ in range(len(jobs) - finished):
                take(results.get(), done)
            self.failed = False
        finally:
            if self.failed:
                for w in self.workers:
                    w.close(kill=True)
            for t in threads:
                t.join()
        return [p.summary() for p in (here, *workers) if p.programs]


class InOrder:
    """Hands results on in job order, holding those that finish early (so the bar and the log
    read the same whichever worker finishes first)."""

    def __init__(self, done: Callable[[int, dict], None]):
        self.done, self.held, self.next = done, {}, 0

    def __call__(self, k: int, result: dict) -> None:
        self.held[k] = result
        while self.next in self.held:
            self.done(self.next, self.held.pop(self.next))
            self.next += 1


def take(message: tuple, done: Callable[[int, dict], None]) -> None:
    k, result, error = message
    if error is not None:
        raise error
    done(k, result)


class InProcess:
    """This process's share of the jobs, between which it hands on the workers' results."""

    def __init__(self):
        self.pid = os.getpid()
        self.reset()

    def reset(self) -> None:
        """Counts from zero (a worker serves several runs of one compile)."""
        self.programs, self.busy, self.peak_rss_mb = 0, 0.0, 0.0

    def serve(self, jobs, context, pending: queue.Queue, results: queue.Queue, done) -> int:
        """Runs jobs until none is pending; returns how many results it handed on."""
        handed = 0
        while True:
            while not results.empty():
                take(results.get(), done)
                handed += 1
            try:
                k = pending.get_nowait()
            except queue.Empty:
                return handed
            result = run_job(jobs[k], *context)
            self.count(result)
            done(k, result)
            handed += 1

    def count(self, result: dict) -> None:
        self.programs += 1
        self.busy += result["seconds"]
        self.peak_rss_mb = max(self.peak_rss_mb, result["peak_rss_mb"])

    def summary(self) -> dict:
        return {"worker": self.pid, "programs": self.programs,
                "busy_seconds": round(self.busy, 2), "peak_rss_mb": round(self.peak_rss_mb, 1)}


class Worker(InProcess):
    """One `python -m tyllm.compile.worker` process; its stderr is this process's (the compile
    log while a compile captures output, the terminal when verbose)."""

    def __init__(self, threads: int):
        super().__init__()
        paths = [str(Path(tyllm.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tyllm.compile.worker", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.pid = self.process.pid

    def feed(self, jobs, context, pending: queue.Queue, results: queue.Queue) -> None:
        """The thread that hands this worker pending jobs until none is left."""
        while True:
            try:
                k = pending.get_nowait()
            except queue.Empty:
                return
            try:
                result = self.run((jobs[k], *context))
            except BaseException as e:  # handed to the main thread, which raises it
                results.put((k, None, e))
                return
            results.put((k, result, None))

    def run(self, payload: tuple) -> dict:
        write_message(self.process.stdin, payload)
        answer = read_message(self.process.stdout)
        if answer is None:
            raise TyllmError(f"A compile worker process ended (exit code "
                             f"{self.process.wait()}; killed for memory?): rerun with "
                             f"--jobs 1, which holds one die's weights at a time.")
        status, value = answer
        if status == "error":
            raise worker_error(*value)
        self.count(value)
        return value

    def close(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def write_message(stream, message) -> None:
    import pickle  # only between tyllm and its own worker processes

    data = pickle.dumps(message)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def read_message(stream):
    """The next message, or None at the end of the stream."""
    import pickle  # written by write_message in tyllm's own parent or worker process

    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return pickle.loads(stream.read(HEADER.unpack(header)[0]))


def worker_error(kind: str, message: str, trace: str) -> Exception:
    """A worker's failure as this process raises it: tyllm's own errors unchanged."""
    if kind == "TyllmError":
        return TyllmError(message)
    error = RuntimeError(f"A compile worker failed: {kind}: {message}")
    error.add_note(trace)
    return error
