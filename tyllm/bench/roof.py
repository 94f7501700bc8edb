"""The memory-bandwidth roof of decode: weight bytes read per token over measured copy bandwidth."""


import torch

from tyllm.artifacts.huge_pages import huge_page_bytes
from tyllm.artifacts.params import load_params, unique_bytes
from tyllm.bench.timing import median_seconds
from tyllm.runtime.tree import Tree


def copy_bandwidth_gbs(threads: int, megabytes: int = 512, repeats: int = 9) -> float:
    """STREAM-style copy bandwidth of a large tensor: bytes read + bytes written per second."""
    torch.set_num_threads(threads)
    src, dst = (huge_page_floats(megabytes).fill_(1) for _ in range(2))
    return 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), repeats) / 1e9


def read_bandwidth_gbs(threads: int, megabytes: int = 512, repeats: int = 9) -> float:
    """Read-only bandwidth: the faster of two full reductions over a large tensor (a sum and a
    max; on the AMD EPYC build machine the sum reads 27 GB/s where the max reads 32, and a
    float32 decode step's weights stream at 34). In huge pages, as a loaded tree's weights are
    (tyllm.artifacts.huge_pages)."""
    torch.set_num_threads(threads)
    src = huge_page_floats(megabytes).fill_(1)
    fastest = min(median_seconds(lambda: src.sum(), repeats),
                  median_seconds(lambda: src.amax(), repeats))
    return src.numel() * 4 / fastest / 1e9


def huge_page_floats(megabytes: int) -> torch.Tensor:
    return huge_page_bytes(megabytes * 2**20).view(torch.float32)


def decode_weight_bytes(tree: Tree, die: int = 0) -> int:
    """Bytes of one die's weights a decode step reads: all of them, except that the embedding
    table gives one row (unless it is also the LM head, stored once when tied)."""
    graph = next(iter(tree.graphs_for(die).values()))
    weights = load_params(tree.root / graph["weights"])
    total = unique_bytes(weights)
    embed = weights.get("embed_tokens")
    if embed is None or weights.get("lm_head") is embed:  # tied and stored once: all of it is read
        return total
    return total - (embed.shape[0] - 1) * embed[0].numel() * embed.element_size()
