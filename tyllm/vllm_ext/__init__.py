"""vLLM integration: `EdgeXExecutor` and `EdgeXWorker` run vLLM requests on tyllm's compiled dies.

    LLM(model=..., tensor_parallel_size=N, distributed_executor_backend=EdgeXExecutor,
        worker_cls="tyllm.vllm_ext.edgex_executor.EdgeXWorker",
        additional_config={"tyllm": {"artifacts_path": ".../Ndie", "seq_len_list": [1, 8]}})
"""
