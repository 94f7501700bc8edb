"""tyllm: ahead-of-time compilation of HF LLMs into per-die artifacts for multi-die edge NPUs."""

__version__ = "0.1.0"
