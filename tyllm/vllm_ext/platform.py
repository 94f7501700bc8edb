"""vLLM platform plugin: with tyllm installed, vLLM runs every engine on the EdgeX executor/worker.

Registered under the `vllm.platform_plugins` entry point group, so `LLM(...)` and `tyllm serve`
need no executor or worker flags. The platform is vLLM's CPU platform plus four decisions: the
worker and executor are tyllm's, prefix caching runs on text trees only (prefix_blocks.py), the
tyllm options and the tree they name are checked against the engine before its process starts,
and requests asking for what the compiled dies cannot do (or a prompt that fills the context)
are refused before they reach the engine.
An engine on a VLM checkpoint has its tree compiled here, in the front end (vlm_engine.py).
Stock vLLM CPU stays one variable away: `VLLM_TARGET_DEVICE=cpu` (or `VLLM_PLUGINS=`) skips
platform plugins.
"""

from vllm.logger import init_logger
from vllm.platforms.cpu import CpuPlatform

from tyllm.vllm_ext.names import PLATFORM_QUALNAME, logger_name

logger = init_logger(logger_name(__name__))


def register() -> str:
    """The entry point vLLM calls while choosing its platform."""
    return PLATFORM_QUALNAME


class EdgeXPlatform(CpuPlatform):
    # The context size of this process's tyllm engine, for get_max_output_tokens: vLLM's OpenAI
    # server asks that with the prompt length only, and builds its one engine config (seen by
    # check_and_update_config) before it takes a request.
    context_len: int | None = None
    speculating: bool = False  # the engine has a speculative_config (no logprobs with it)

    @classmethod
    def check_and_update_config(cls, vllm_config) -> None:
        from tyllm.vllm_ext.artifacts import check_engine_config
        from tyllm.vllm_ext.edgex_executor import WORKER_QUALNAME, EdgeXExecutor

        parallel = vllm_config.parallel_config
        if parallel.worker_cls in ("auto", WORKER_QUALNAME):  # an explicit other worker wins
            parallel.worker_cls = WORKER_QUALNAME
            parallel.distributed_executor_backend = EdgeXExecutor
            model_config = vllm_config.model_config
            cache = vllm_config.cache_config
            if model_config is None or getattr(model_config, "is_multimodal_model", False):
                if model_config is not None and cache.enable_prefix_caching:
                    logger.info("tyllm: prefix caching runs on text trees only; this VLM "
                                "engine runs without it.")
                cache.enable_prefix_caching = False
            if vllm_config.model_config is not None:
                check_engine_config(vllm_config)  # before the engine core starts
                cls.context_len = vllm_config.model_config.max_model_len
                cls.speculating = vllm_config.speculative_config is not None
        super().check_and_update_config(vllm_config)

    @classmethod
    def validate_request(cls, processed_inputs, params) -> None:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        from tyllm.vllm_ext.sampling import (
            SPECULATIVE_LOGPROBS,
            unsupported,
            unsupported_message,
        )

        if isinstance(params, SamplingParams) and (bad := unsupported(params)):
            raise VLLMValidationError(unsupported_message(bad), parameter=bad[0])  # HTTP 400
        if isinstance(params, SamplingParams) and cls.speculating and params.logprobs is not None:
            raise VLLMValidationError(SPECULATIVE_LOGPROBS, parameter="logprobs")
        super().validate_request(processed_inputs, params)

    def get_max_output_tokens(self, prompt_len: int) -> int:
        """vLLM's OpenAI server gives a request max_tokens = context - prompt length; a prompt
        that fills the context would get max_tokens=0 and vLLM's "max_tokens must be at least
        1, got 0": it gets a sentence naming the prompt and the context instead (HTTP 400)."""
        from vllm.exceptions import VLLMValidationError

        if self.context_len is not None and prompt_len >= self.context_len:
            raise VLLMValidationError(full_context_message(prompt_len, self.context_len))
        return super().get_max_output_tokens(prompt_len)


def full_context_message(prompt_len: int, context_len: int) -> str:
    return (f"The prompt is {prompt_len} tokens long and fills the whole context of "
            f"{context_len} tokens (max_model_len, the KV cache size of the tree), leaving no "
            f"room for a generated token: shorten the prompt by at least max_tokens tokens, or "
            f"serve a tree compiled with a larger KV cache (tyllm compile --max-kv).")
