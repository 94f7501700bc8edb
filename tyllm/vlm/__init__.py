"""Vision-language models: compile (visual/, mrope/, rope index, language model) and run."""
