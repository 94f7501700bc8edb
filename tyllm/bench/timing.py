"""One shape for every engine's numbers: time to first token and decode tokens per second."""

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

QUIET_CORES = 0.25  # other processes' CPU use below which the machine counts as quiet
QUIET_WAIT_S = 60


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


def cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process), from /proc."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime, stime


def others_busy_cores(seconds: float = 0.5) -> float:
    """Cores kept busy by other processes over `seconds` (a benchmark's engine children that
    outlive their run, a neighbour on a shared machine)."""
    (busy0, own0), start = cpu_ticks(), time.monotonic()
    time.sleep(seconds)
    (busy1, own1), wall = cpu_ticks(), time.monotonic() - start
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / wall


def quiet_wait_s() -> float:
    """How long a benchmark waits for a quiet machine: QUIET_WAIT_S, or the seconds in
    TYLLM_BENCH_QUIET_WAIT_S (the test suite, which runs tests side by side, sets 0)."""
    return float(os.environ.get("TYLLM_BENCH_QUIET_WAIT_S", QUIET_WAIT_S))


def wait_until_quiet(limit: float = QUIET_CORES, timeout_s: float | None = None) -> float:
    """Waits until other processes use less than `limit` cores; says so when they do not
    within `timeout_s` (default quiet_wait_s(); the figures that follow would read low).
    Returns the last reading."""
    deadline = time.monotonic() + (quiet_wait_s() if timeout_s is None else timeout_s)
    while (busy := others_busy_cores()) >= limit and time.monotonic() < deadline:
        pass
    if busy >= limit:
        print(f"bench: other processes keep {busy:.1f} cores busy; the next figures may read "
              f"low", file=sys.stderr, flush=True)
    return busy


def median_seconds(run, repeats: int) -> float:
    """Median of `repeats` timed runs after one untimed run (page faults, pool start-up), on a
    quiet machine: on a shared machine a single lucky or unlucky run says little."""
    wait_until_quiet()
    run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return statistics.median(times)
