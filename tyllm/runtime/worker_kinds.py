"""How a session runs its dies: the one list of worker kinds, read by the runtime
(tyllm/runtime/workers.py), the CLI and the vLLM options (a light module: no torch import)."""

THREADS, PROCESSES = "threads", "processes"
WORKER_NAMES = (THREADS, PROCESSES)  # threads of this process | one process per die
