"""Capture of per-die step graphs: torch.export, the all-reduce op, ONNX export."""
