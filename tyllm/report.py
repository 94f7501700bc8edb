"""Compile progress (one line per graph, with timings) and the final compile report."""

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class CompileReport:
    total_graphs: int
    verbose: bool = True
    started: float = field(default_factory=time.perf_counter)
    graphs: list[dict] = field(default_factory=list)

    def log(self, line: str) -> None:
        if self.verbose:
            print(line, file=sys.stderr, flush=True)

    @contextmanager
    def graph(self, die: int, seq_len: int, kind: str):
        timings: dict[str, float] = {}
        entry = {"die": die, "seq_len": seq_len, "kind": kind, "seconds": timings}
        yield timings
        self.graphs.append(entry)
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        self.log(f"[{len(self.graphs)}/{self.total_graphs}] die {die} seqlen {seq_len} "
                 f"({kind}): {steps}")

    @staticmethod
    @contextmanager
    def timed(timings: dict, name: str):
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    def summary(self, sizes_per_die: dict[int, int]) -> dict:
        return {"graphs": self.graphs, "bytes_per_die": sizes_per_die,
                "compile_seconds": round(time.perf_counter() - self.started, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1)}
