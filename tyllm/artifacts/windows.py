"""KV windows: each step graph is compiled for a ladder of history lengths W (static shapes, one
library per W), and a call uses the smallest W that holds the positions it attends to, so the
cost of a step follows the history, not max_kv_cache_size.

The default ladder grows by 4x from 256 and always ends at max_kv_cache_size:
4096 -> [256, 1024, 4096], 1024 -> [256, 1024], 512 -> [256, 512], 200 -> [200].
"""

import torch

from tyllm.errors import TyllmError

FIRST_WINDOW = 256
GROWTH = 4
SMALLEST_LADDER = 4  # a cache of fewer positions has the one window max_kv_cache_size


def default_windows(max_kv: int) -> list[int]:
    ladder, w = [], FIRST_WINDOW
    while w < max_kv:
        ladder.append(w)
        w *= GROWTH
    return [*ladder, max_kv]


def kv_windows(max_kv: int, requested=None,
               names: tuple[str, str] = ("kv_windows", "max_kv_cache_size")) -> list[int]:
    """The compiled windows: `requested` (distinct sizes up to max_kv; max_kv is always added,
    it is the seed's graph) or the default ladder. `names`: how the user spelled the windows
    and the cache size, for errors."""
    if requested is None:
        return default_windows(max_kv)
    sizes, (option, limit) = list(requested), names
    bad = [w for w in sizes if not isinstance(w, int) or isinstance(w, bool) or not
           2 <= w <= max_kv]
    if bad:
        raise TyllmError(f"{option} {bad} must be integers from 2 to {limit}={max_kv}: list "
                         f"history lengths such as [256, 1024].")
    twice = sorted({w for w in sizes if sizes.count(w) > 1})
    if twice:
        raise TyllmError(f"{option} {sizes} has duplicates ({', '.join(map(str, twice))}): "
                         f"list each window once.")
    windows = sorted({*sizes, max_kv})
    if max_kv < SMALLEST_LADDER and windows != [max_kv]:
        raise TyllmError(f"A KV cache of {max_kv} positions has one window: compile with "
                         f"{limit} >= {SMALLEST_LADDER} to use {option}.")
    return windows


def window_for(start: int, windows: list[int]) -> int:
    """The smallest window holding the `start` positions a step at `start` attends to."""
    return min((w for w in windows if w >= start), default=max(windows))


def history_mask(start: int, window: int) -> torch.Tensor:
    """history_mask[p]: position p of the window holds history (p < start)."""
    return torch.arange(window, dtype=torch.int64) < start
