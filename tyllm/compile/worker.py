"""A compile worker process (started by tyllm/compile/jobs.py): reads jobs from stdin,
answers each on the pipe that was its stdout. Everything else it prints (TVM, torch, ONNX)
goes to its stderr, which is the parent's: the compile log, or the terminal when verbose.

Usage: python -m tyllm.compile.worker THREADS
"""

import os
import sys
import traceback

import torch

from tyllm.compile.jobs import read_message, run_job, write_message
from tyllm.compile.report import CompileReport


def main(threads: int) -> None:
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # framework output printed to stdout must not reach the answers
    torch.set_num_threads(threads)
    silent = CompileReport(0, progress=False)
    while (payload := read_message(sys.stdin.buffer)) is not None:
        try:
            answer = ("ok", run_job(*payload, silent))
        except Exception as e:  # sent to the parent, which raises it
            answer = ("error", (type(e).__name__, str(e), traceback.format_exc()))
        write_message(answers, answer)


if __name__ == "__main__":
    main(int(sys.argv[1]))
