"""Compile progress (one bar: stage, graph i/n, ETA), the compile log, and the final report.

While a compile runs, everything the frameworks print (TVM's C++ warnings, torch and ONNX
warnings and log lines) and tyllm's per-graph timings go to `compile.log` in the tree; the
terminal shows the bar and one final line. `verbose` shows everything live instead.
"""

import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tyllm.cache import cache_root
from tyllm.compile.memory import peak_rss_mb
from tyllm.errors import TyllmError


@contextmanager
def output_into(log_path: Path):
    """Points this process's stderr (file descriptor 2: C++ and Python alike) at `log_path`;
    yields a stream on the terminal's stderr."""
    try:
        sys.stderr.flush()
        terminal = os.fdopen(os.dup(2), "w", buffering=1)
    except OSError:  # no stderr at all (closed, a daemon): there is no terminal to keep
        terminal = open(os.devnull, "w")  # closed below
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            try:
                sys.stderr.flush()  # may fail on a full disk: stderr is restored regardless
            finally:
                os.dup2(terminal.fileno(), 2)
                terminal.close()


class _Warnings(logging.Handler):
    """tyllm's warnings (a damaged program cache entry removed, a cache that cannot be
    written) in the compile log and on the terminal, above the bar."""

    def __init__(self, terminal):
        super().__init__(logging.WARNING)
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        print(line, file=sys.stderr, flush=True)
        from tqdm import tqdm

        tqdm.write(line, file=self.terminal)


@contextmanager
def warnings_to(terminal):
    logger, handler = logging.getLogger("tyllm"), _Warnings(terminal)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def new_log(kind: str) -> Path:
    """A fresh log file of this process under the tyllm cache: `<cache>/logs/<kind>-<time>-
    <pid>.log` (a failed compile's kept log, a `tyllm compare` run's framework output)."""
    path = cache_root() / "logs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def keep_log(log_path: Path) -> Path:
    """A failed compile's log, copied out of its staging folder before that is removed."""
    kept = new_log("compile")
    shutil.copyfile(log_path, kept)
    return kept


@dataclass
class CompileReport:
    total_graphs: int
    progress: bool = True  # the bar and the final line
    verbose: bool = False  # framework output and per-graph lines live, not only in the log
    started: float = field(default_factory=time.perf_counter)
    graphs: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)  # how the programs split across workers
    _bar: object = None
    _label: str = ""

    @contextmanager
    def capture(self, log_path: Path):
        """The bar on the terminal, all other output into `log_path` (unless verbose); a
        failure's message names the log, kept outside the staging folder."""
        try:
            if self.verbose:
                with self._bar_on(sys.stderr):
                    yield
            else:
                with (output_into(log_path) as terminal, self._bar_on(terminal),
                      warnings_to(terminal)):
                    yield
        except BaseException as e:
            kept = keep_log(log_path) if log_path.is_file() else None
            if isinstance(e, TyllmError) and kept:
                raise type(e)(f"{e} The compile log is {kept}.") from e
            if kept:
                e.add_note(f"tyllm: the compile log is {kept}")
            raise

    @contextmanager
    def _bar_on(self, stream):
        if not self.progress:
            yield
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.total_graphs, file=stream, unit="graph", desc="compile",
                         bar_format="{desc} |{bar:20}| {elapsed}, ETA {remaining}",
                         dynamic_ncols=True)
        try:
            yield
        finally:
            self._bar.close()
            self._bar = None

    def log(self, line: str) -> None:
        """A detail for the log (stderr is the log while capturing; live when verbose)."""
        print(line, file=sys.stderr, flush=True)

    def add_workers(self, graphs: str, workers: list[dict]) -> None:
        """How one set of graphs (e.g. "step", "vision") split across processes."""
        self.workers.extend({"graphs": graphs, **w} for w in workers)

    def announce(self, label: str) -> None:
        """What the bar says is being compiled now."""
        self._label = label
        self._stage(label)

    def _stage(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(f"compile {text}", refresh=True)

    @contextmanager
    def graph(self, die: int, seq_len: int, kind: str, windows: list[int] | None = None,
              batch: int = 1):
        """One step of the bar: a graph, or a step's graphs for several KV windows."""
        timings: dict[str, float] = {}
        entry = {"die": die, "seq_len": seq_len, "kind": kind, "seconds": timings}
        batched = "" if batch == 1 else f" batch {batch}"
        label = (f"[{len(self.graphs) + 1}/{self.total_graphs}] die {die}{batched} seqlen "
                 f"{seq_len} ({kind})")
        if batch > 1:
            entry["batch"] = batch
        if windows:
            entry["windows"] = windows
        if windows and len(windows) > 1:
            label += f" kv {'/'.join(map(str, windows))}"
        self._label = label
        self._stage(label)
        yield timings
        self.graphs.append(entry)
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        self.log(f"{label}: {steps}")
        if self._bar is not None:
            self._bar.update(1)

    @contextmanager
    def timed(self, timings: dict, name: str):
        self._stage(f"{self._label}: {name}" if self._label else name)
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    def summary(self, sizes_per_die: dict[int, int]) -> dict:
        return {"graphs": self.graphs, "bytes_per_die": sizes_per_die,
                "compile_seconds": round(time.perf_counter() - self.started, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1), "workers": self.workers}

    def say(self, line: str) -> None:
        """A line for the user on the terminal (the plan, the final line)."""
        if self.progress:
            print(line, file=sys.stderr, flush=True)
