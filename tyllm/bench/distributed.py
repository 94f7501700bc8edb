"""Dies across hosts: decode ms/token of a tree whose dies are the ranks of torchrun jobs on
this machine ("hosts" joined over loopback, e.g. 2 + 1 ranks for 3 dies) against the same
tree with processes (shared-memory all-reduce), and the bytes each die's all-reduces receive
per token. Run as a module, it is one rank's (or the processes run's) timing job."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tyllm.runtime.distributed.loopback import launch_loopback

NEW_TOKENS = 32


def timing_job(tree: str, workers: str, prompt: list[int], out: str) -> None:
    """Warm-up, then decode NEW_TOKENS; rank 0 (or the only process) writes the result."""
    from tyllm import runtime

    with runtime.load(tree, workers=workers) as session:
        session.generate(prompt, 4, stop_at_eos=False)
        member = getattr(session.workers, "member", None)
        before = (member.calls, member.bytes_received) if member else (0, 0)
        start = time.perf_counter()
        session.generate(prompt, NEW_TOKENS, stop_at_eos=False)
        seconds = time.perf_counter() - start
        calls, received = ((member.calls - before[0], member.bytes_received - before[1])
                           if member else (0, 0))
    Path(out).write_text(json.dumps({
        "ms_per_token": 1e3 * seconds / NEW_TOKENS,
        "all_reduces_per_token": calls / NEW_TOKENS,
        "bytes_received_per_token_per_die": received / NEW_TOKENS}))


def run_processes(tree: Path, prompt: list[int], work: Path) -> dict:
    out = work / "processes.json"
    subprocess.run([sys.executable, "-m", "tyllm.bench.distributed", str(tree), "processes",
                    json.dumps(prompt), str(out)], check=True, capture_output=True)
    return json.loads(out.read_text())


def run_distributed(tree: Path, prompt: list[int], work: Path, hosts: list[int]) -> dict:
    out = work / "distributed.json"
    command = ["-m", "tyllm.bench.distributed", str(tree), "distributed", json.dumps(prompt),
               str(out)]
    procs = launch_loopback([(n, command) for n in hosts], dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL)
    failed = [p.communicate()[1] for p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError("the distributed timing job failed:\n" + failed[0][-3000:])
    return json.loads(out.read_text())


def distributed_rates(tree: Path, prompt: list[int], work: Path, hosts: list[int]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result = {"hosts": hosts, "new_tokens": NEW_TOKENS,
              "processes": run_processes(tree, prompt, work),
              "distributed": run_distributed(tree, prompt, work, hosts)}
    result["distributed_over_processes"] = (result["distributed"]["ms_per_token"]
                                            / result["processes"]["ms_per_token"])
    return result


if __name__ == "__main__":  # on ranks other than 0, load serves the die, then exits
    tree_arg, workers_arg, prompt_arg, out_arg = sys.argv[1:5]
    timing_job(tree_arg, workers_arg, json.loads(prompt_arg), out_arg)
