from tyllm.models.llama.spec import LLAMA

__all__ = ["LLAMA"]
