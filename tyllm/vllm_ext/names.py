"""Names vLLM resolves by string, kept apart so that any module can compare against them."""

PLATFORM_QUALNAME = "tyllm.vllm_ext.platform.EdgeXPlatform"


def logger_name(module: str) -> str:
    """vLLM sets up (handlers, VLLM_LOGGING_LEVEL) only its own "vllm" logger tree: tyllm's
    engine messages log under it, or those below WARNING are dropped."""
    return f"vllm.{module}"
