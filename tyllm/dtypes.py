"""The one table of the float dtypes a tree is compiled and run in (config.json's `dtype`, the
KV cache and graph input descriptions): name -> torch dtype."""

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16}
