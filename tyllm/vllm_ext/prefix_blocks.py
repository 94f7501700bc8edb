"""vLLM prefix caching on static KV slots.

vLLM hashes a prompt's full blocks of `block_size` tokens and, on a hit, hands a new request
its cached blocks' ids with `num_computed_tokens` already counted. tyllm's KV lives in one
static slot per request, so the dies also keep each full block's KV under its vLLM block id
when a request computes it (`store`), and copy a hit's blocks into the new request's slot just
before its first chunk runs (`load`). vLLM decides everything else: which blocks are cached,
least-recently-used eviction, never evicting a block a running request holds, and its
hit-rate metrics. A block id is reused only after vLLM evicted it, when its new owner computes
and stores it again, so a kept block always holds what vLLM's hash says.

vLLM caches a block when the step that computes it is scheduled, so a request later in the
same step may hit it: requests run in the scheduler's order and a hit is loaded lazily, after
the requests before it stored theirs.
"""

from dataclasses import dataclass


@dataclass
class BlockTable:
    ids: list[int]  # the request's vLLM block ids, in position order
    stored: int  # leading blocks whose KV the dies keep
    to_load: int  # leading blocks to copy into the slot before the request runs


class PrefixBlocks:
    def __init__(self, session, block_size: int):
        self.session, self.block_size = session, block_size
        self.tables: dict[str, BlockTable] = {}

    def admit(self, req_id: str, block_ids: list[int], num_computed: int) -> None:
        """A new (or resumed) request: its blocks, `num_computed` tokens of them cached."""
        hit = num_computed // self.block_size
        self.tables[req_id] = BlockTable(list(block_ids), hit, hit)

    def add_blocks(self, req_id: str, block_ids: list[int]) -> None:
        self.tables[req_id].ids += block_ids

    def drop(self, req_id: str) -> None:
        self.tables.pop(req_id, None)

    def load(self, req_id: str, slot: int) -> None:
        table = self.tables[req_id]
        if table.to_load:
            self.session.load_blocks(slot, table.ids[:table.to_load], self.block_size)
            table.to_load = 0

    def store(self, req_id: str, slot: int, num_computed: int) -> None:
        """Keeps the blocks the request's computed tokens now fill."""
        table = self.tables[req_id]
        full = min(num_computed // self.block_size, len(table.ids))
        if full > table.stored:
            first = table.stored
            self.session.store_blocks(slot, [i * self.block_size for i in range(first, full)],
                                      table.ids[first:full], self.block_size)
            table.stored = full
