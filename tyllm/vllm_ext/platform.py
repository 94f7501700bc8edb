"""vLLM platform plugin: with tyllm installed, vLLM runs every engine on the EdgeX executor/worker.

Registered under the `vllm.platform_plugins` entry point group, so `LLM(...)` and `tyllm serve`
need no executor or worker flags. The platform is vLLM's CPU platform plus three decisions: the
worker and executor are tyllm's, prefix caching is off (a KV slot holds one whole sequence), and
requests asking for what the compiled dies cannot do are refused before they reach the engine.
An engine on a VLM checkpoint has its tree compiled here, in the front end (vlm_engine.py).
Stock vLLM CPU stays one variable away: `VLLM_TARGET_DEVICE=cpu` (or `VLLM_PLUGINS=`) skips
platform plugins.
"""

from vllm.platforms.cpu import CpuPlatform

from tyllm.vllm_ext.names import PLATFORM_QUALNAME


def register() -> str:
    """The entry point vLLM calls while choosing its platform."""
    return PLATFORM_QUALNAME


class EdgeXPlatform(CpuPlatform):
    @classmethod
    def check_and_update_config(cls, vllm_config) -> None:
        from tyllm.vllm_ext.artifacts import name_vlm_tree
        from tyllm.vllm_ext.edgex_executor import WORKER_QUALNAME, EdgeXExecutor

        parallel = vllm_config.parallel_config
        if parallel.worker_cls in ("auto", WORKER_QUALNAME):  # an explicit other worker wins
            parallel.worker_cls = WORKER_QUALNAME
            parallel.distributed_executor_backend = EdgeXExecutor
            vllm_config.cache_config.enable_prefix_caching = False
            if vllm_config.model_config is not None:
                name_vlm_tree(vllm_config)  # a VLM checkpoint's tree, before any processor
        super().check_and_update_config(vllm_config)

    @classmethod
    def validate_request(cls, processed_inputs, params) -> None:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        from tyllm.vllm_ext.sampling import unsupported, unsupported_message

        if isinstance(params, SamplingParams) and (bad := unsupported(params)):
            raise VLLMValidationError(unsupported_message(bad), parameter=bad[0])  # HTTP 400
        super().validate_request(processed_inputs, params)
