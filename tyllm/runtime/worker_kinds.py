"""How a session runs its dies: the one list of worker kinds, read by the runtime
(tyllm/runtime/workers.py), the CLI and the vLLM options (a light module: no torch import)."""

THREADS, PROCESSES, DISTRIBUTED = "threads", "processes", "distributed"
WORKER_NAMES = (THREADS, PROCESSES)  # threads of this process | one process per die
# ...or each die a rank of a torchrun job, on one host or several (tyllm/runtime/distributed/)
RUN_WORKER_NAMES = (*WORKER_NAMES, DISTRIBUTED)  # `tyllm run`, runtime.load and the engines
