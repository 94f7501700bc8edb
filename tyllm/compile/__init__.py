"""The compile pipeline: a request (request.py, vlm_request.py) -> the LLM or VLM recipe (llm.py,
vlm.py, vision.py) -> each distinct program captured and lowered once (programs.py, step_capture.py,
core.py) on a pool of worker processes (jobs.py, worker.py), kept in the program cache
(program_cache.py) -> a finished tree (tree.py). budget.py plans disk and memory first; report.py
draws the bar and writes compile_report.json."""
