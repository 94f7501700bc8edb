"""A torchrun job's script for tests/test_distributed.py: every rank loads the tree with
workers="distributed"; rank 0 runs the requests of JOB (a JSON file) and writes their tokens
to JOB's "out" path (the other ranks serve their dies and leave inside load); "repeat" runs
them that many times (a long job, for the fault tests)."""

import json
import sys
from pathlib import Path

from tyllm import runtime


def main(job_path: str) -> None:
    job = json.loads(open(job_path).read())
    with runtime.load(job["tree"], workers="distributed") as session:
        Path(job["out"]).with_suffix(".started").touch()  # every rank has joined
        for _ in range(job["repeat"]):
            out = {"single": [session.generate(p, job["new_tokens"], stop_at_eos=False)
                              for p in job["prompts"]],
                   "batch": session.generate_batch(job["prompts"], job["new_tokens"],
                                                   stop_at_eos=False)}
    with open(job["out"], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
