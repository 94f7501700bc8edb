"""vLLM integration: vLLM engines run on tyllm's compiled dies (docs/VLLM.md).

Installing tyllm registers the `EdgeXPlatform` plugin, so a plain engine uses the EdgeX
executor/worker:

    LLM(model=..., tensor_parallel_size=N,
        additional_config={"tyllm": {"artifacts_path": ".../Ndie", "seq_len_list": [1, 8]}})

and `tyllm serve MODEL_OR_TREE [vLLM serve flags]` starts vLLM's OpenAI server on them.
"""
