"""Vision-language architectures (Qwen2.5-VL, Qwen3-VL): graph modules and specs."""
