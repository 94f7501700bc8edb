from tyllm.models.qwen3.spec import QWEN3

__all__ = ["QWEN3"]
