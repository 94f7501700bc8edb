"""One shape for every engine's numbers: time to first token and decode tokens per second."""

import statistics
import time
from dataclasses import asdict, dataclass


@dataclass
class Speed:
    engine: str
    ttft_s: float  # prompt in, first token out
    decode_tok_s: float  # steady decode rate after the first token
    new_tokens: int

    def row(self) -> dict:
        return asdict(self)


def clock() -> float:
    return time.perf_counter()


def decode_rate(first_s: float, total_s: float, new_tokens: int) -> float:
    """Tokens after the first, per second, from a run's first-token and total times."""
    return (new_tokens - 1) / max(total_s - first_s, 1e-9)


def median_seconds(run, repeats: int) -> float:
    """Median of `repeats` timed runs after one untimed run (page faults, pool start-up): on a
    shared machine a single lucky or unlucky run says little."""
    run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return statistics.median(times)
