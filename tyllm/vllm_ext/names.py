"""Names vLLM resolves by string, kept apart so that any module can compare against them."""

PLATFORM_QUALNAME = "tyllm.vllm_ext.platform.EdgeXPlatform"
