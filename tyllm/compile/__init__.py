"""The compile pipeline: a request (request.py, vlm_request.py) -> the LLM or VLM recipe (llm.py,
vlm.py, vision.py; a language model's step graphs: steps.py) -> each distinct program captured
and lowered once by one scheduler (programs.py, with step_capture.py and core.py) on a pool of
worker processes (jobs.py, worker.py), kept in the program cache (program_cache.py) -> a
finished tree (tree.py). budget.py plans disk and memory first; report.py draws the bar and
writes compile_report.json."""
