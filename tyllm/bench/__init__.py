"""Measurements behind scripts/bench.py: the compiled tree against HF, vLLM and onnxruntime."""
