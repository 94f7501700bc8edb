from tyllm.models.qwen2.spec import QWEN2

__all__ = ["QWEN2"]
