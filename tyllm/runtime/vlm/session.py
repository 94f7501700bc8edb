"""A loaded VLM tree: `generate_multimodal(prompt, images, videos)` on emulated dies.

Per request: preprocess (runtime/vlm/inputs.py) -> vision programs per temporal slice (die 0's
merged features; every vision die computes the same replicated merger) -> the rope-index graph ->
features scattered into the text embeddings (and deepstack rows) -> prefill chunks through each
language die's mrope + language graphs -> greedy decode at positions index + rope delta.
"""

from dataclasses import dataclass

import torch

from tyllm.artifacts import vlm_layout as layout
from tyllm.errors import TyllmError
from tyllm.models.vlm.processor import image_processor
from tyllm.runtime.logits import joined_logits
from tyllm.runtime.session import Session, count_of
from tyllm.runtime.vlm.inputs import VISION_END, VISION_START, Preprocessor, VisionItem
from tyllm.text import load_tokenizer


@dataclass(frozen=True)
class PreparedPrompt:
    embeds: torch.Tensor  # [P, H], vision features in place of the pads
    positions: torch.Tensor  # [3, P]
    deepstack: torch.Tensor | None  # [K, P, H] (Qwen3-VL)
    delta: int  # decode positions are index + delta


def preprocessor_for(tree) -> Preprocessor:
    vision = tree.config["vision"]
    sizes = [(tuple(s["size"]), tuple(s["grid"])) for s in vision["sizes"]]
    return Preprocessor(image_processor(tree.root), sizes, vision["merge_size"],
                        vision["temporal_patch_size"], tree.config["modalities"],
                        tree.config["video_frames_as_images"], tree.config["tokens_per_second"])


def nn_pad(t: torch.Tensor, rows: int, axis: int) -> torch.Tensor:
    """`t` with zero rows added along `axis` up to `rows`."""
    pad = [0, 0] * (t.dim() - 1 - axis) + [0, rows - t.shape[axis]]
    return torch.nn.functional.pad(t, pad)


class VlmSession(Session):
    def __init__(self, tree, workers, vision_workers):
        super().__init__(tree, workers)
        self.vision = vision_workers
        self.tokenizer = load_tokenizer(tree.root)
        self.preprocessor = preprocessor_for(tree)
        self.tokens = tree.config["tokens"]
        self.deepstack_layers = tree.config["vision"]["deepstack_layers"]
        rope = tree.buffers["rope_index"]
        self.rope_index = tree.backend.load(tree.file(rope["library"]), [])
        self.max_runs = rope["max_runs"]
        self.prompts: dict[int, PreparedPrompt] = {}  # slot -> its multimodal prompt

    def close(self) -> None:
        super().close()
        if self.vision is not None:
            self.vision.close()
            self.vision = None

    # -- language dies -------------------------------------------------------------------------
    def _step(self, tokens: list[int], start: int, seq_len: int, slot: int = 0) -> torch.Tensor:
        """One chunk (Session.extend plans them): its rows, padded to the graph's seq_len."""
        if self.workers is None:
            raise TyllmError("This session is closed: load the tree again.")
        embeds, positions, deepstack = self.chunk_rows(tokens, start, seq_len, slot)
        slices = self.workers.step(seq_len, embeds, positions, deepstack, start, len(tokens),
                                   slot)
        return joined_logits(slices)[0]

    def chunk_rows(self, tokens: list[int], start: int, seq_len: int, slot: int):
        """A chunk's language-graph rows (embeddings, 3-axis positions, deepstack rows or None),
        padded to `seq_len`: what `_step` sends to the dies (tyllm.compare taps them too)."""
        embeds, positions, deepstack = self._rows(tokens, start, slot)
        embeds, positions = nn_pad(embeds, seq_len, 0), nn_pad(positions, seq_len, 1)
        if deepstack is not None:
            deepstack = nn_pad(deepstack, seq_len, 1)
        return embeds, positions, deepstack

    def _decode_call(self, batch: int, tokens: list[int], starts: list[int],
                     slots: list[int]) -> torch.Tensor:
        """Session._decode_call with each sequence's embeddings, positions and deepstack rows
        (from its prepared prompt), padded to the decode length and to `batch` sequences."""
        m = self.decode_len
        inputs = self._batch_rows(batch, m, [[t] for t in tokens], starts, slots)
        slices = self._workers().rows(batch, m, *inputs, starts, [1] * len(slots), slots)
        return joined_logits(slices)

    def _verify_call(self, batch: int, width: int, rows: list[list[int]], starts: list[int],
                     slots: list[int]) -> torch.Tensor:
        """Session._verify_call with each sequence's embeddings, positions and deepstack rows
        (past its prompt: text rows at the prompt's position delta)."""
        inputs = self._batch_rows(batch, width, rows, starts, slots)
        slices = self._workers().call("verify", batch, width, *inputs, starts,
                                      [len(row) for row in rows], slots)
        return joined_logits(slices)

    def _batch_rows(self, batch: int, m: int, rows: list[list[int]], starts: list[int],
                    slots: list[int]):
        """The language graph's inputs for len(rows) sequences of up to `m` rows each, padded
        to `m` rows and to `batch` sequences: embeddings, positions, deepstack rows or None."""
        parts = [self._rows(row, s, slot) for row, s, slot in zip(rows, starts, slots,
                                                                    strict=True)]
        parts += [self._rows([0], 0, -1)] * (batch - len(parts))  # padding sequences
        embeds = torch.cat([nn_pad(e, m, 0) for e, _, _ in parts])
        positions = torch.cat([nn_pad(p, m, 1) for _, p, _ in parts], dim=1)
        deepstack = (None if parts[0][2] is None else
                     torch.cat([nn_pad(d, m, 1) for _, _, d in parts], dim=1))
        return embeds, positions, deepstack

    def _no_deepstack(self, rows: int, embeds: torch.Tensor) -> torch.Tensor | None:
        if not self.deepstack_layers:
            return None
        return torch.zeros(self.deepstack_layers, rows, embeds.shape[1], dtype=embeds.dtype)

    def _rows(self, tokens: list[int], start: int, slot: int):
        """Embeddings, positions and deepstack rows of `tokens` at `start`..: from the slot's
        prepared multimodal prompt where they fall inside it, else text rows (index + delta)."""
        prepared = self.prompts.get(slot)
        embeds = self.embedding[torch.tensor(tokens)]
        delta = prepared.delta if prepared is not None else 0
        pos = (torch.arange(start, start + len(tokens)) + delta).expand(3, -1).contiguous()
        deep = self._no_deepstack(len(tokens), embeds)
        if prepared is not None and start < len(prepared.embeds):
            inside = slice(start, min(start + len(tokens), len(prepared.embeds)))
            n = inside.stop - inside.start
            embeds[:n], pos[:, :n] = prepared.embeds[inside], prepared.positions[:, inside]
            if deep is not None:
                deep[:, :n] = prepared.deepstack[:, inside]
        return embeds, pos, deep

    def release(self, slot: int) -> None:
        """Forgets a slot's prepared prompt (its request finished)."""
        self.prompts.pop(slot, None)

    def prefill(self, input_ids: list[int]) -> torch.Tensor:
        if self._kinds(torch.tensor(input_ids)).any():
            raise TyllmError("input_ids hold image/video pad tokens: use generate_multimodal "
                             "with the images or videos they stand for.")
        self.release(0)
        return super().prefill(input_ids)

    # -- vision --------------------------------------------------------------------------------
    def _features(self, items: list[VisionItem]):
        embeds, deep = [], []
        for item in items:
            for rows in item.slices:
                out = self.vision.step(layout.size_tag(item.size), rows)[0]
                embeds.append(out[0])
                if self.deepstack_layers:
                    deep.append(out[1])
        return torch.cat(embeds), (torch.cat(deep, dim=1) if deep else None)

    def _kinds(self, ids: torch.Tensor) -> torch.Tensor:
        """Per token: 0 text, 1 image pad, 2 video pad."""
        return ((ids == self.tokens["image_token_id"]).long()
                + 2 * (ids == self.tokens["video_token_id"]).long())

    def _positions(self, ids: torch.Tensor, runs) -> tuple[torch.Tensor, int]:
        kinds = self._kinds(ids)
        starts = int(((kinds > 0) & (kinds != torch.cat([kinds.new_zeros(1), kinds[:-1]]))).sum())
        if starts != len(runs):
            raise TyllmError(f"The prompt holds {starts} runs of vision pads but its images and "
                             f"videos make {len(runs)}: put each item's pads between its own "
                             f"{VISION_START} and {VISION_END}.")
        if not runs:  # text only: 1-D positions on all three axes
            return torch.arange(len(ids)).expand(3, -1).contiguous(), 0
        if len(runs) > self.max_runs:
            raise TyllmError(f"The request has {len(runs)} images/frame groups but the tree "
                             f"accepts {self.max_runs} (max_model_len / the smallest image's "
                             f"tokens): send fewer.")
        types = torch.zeros(self.tree.max_kv, dtype=torch.int64)
        types[:len(ids)] = kinds
        grids = torch.zeros(self.max_runs, 3, dtype=torch.int64)
        intervals = torch.zeros(self.max_runs, dtype=torch.float32)
        for i, (t, h, w, interval) in enumerate(runs):
            grids[i] = torch.tensor([t, h, w])
            intervals[i] = interval
        positions, delta = self.rope_index(types, grids, intervals, torch.tensor([len(ids)]))
        return positions[:, :len(ids)].clone(), int(delta[0])

    def _check_budget(self, prompt: int, max_new_tokens: int, items) -> None:
        room = self.tree.max_kv
        if prompt + max_new_tokens - 1 > room:
            vision = sum(self.preprocessor.tokens_per_slice(i) * len(i.slices) for i in items)
            raise TyllmError(f"The prompt expands to {prompt} tokens ({vision} of them for "
                             f"{len(items)} images/videos) and {max_new_tokens} new tokens are "
                             f"asked, but the tree holds {room} positions: send fewer or smaller "
                             f"images, ask for fewer tokens, or recompile with a larger "
                             f"--max_model_len.")

    def prepare(self, slot: int, ids: list[int], items: list[VisionItem]) -> None:
        """Computes a multimodal prompt's embeddings (vision features in place of the pads),
        3-axis positions and deepstack rows for `slot`; `extend` then reads them. `items` are in
        prompt order."""
        ids_t = torch.tensor(ids)
        self._check_ids(ids)
        embeds = self.embedding[ids_t].clone()
        deep = self._no_deepstack(len(ids), embeds)
        if items:
            features, deep_features = self._features(items)
            mask = self._kinds(ids_t) > 0
            if int(mask.sum()) != features.shape[0]:
                raise TyllmError(f"The prompt holds {int(mask.sum())} vision pads but the "
                                 f"images/videos give {features.shape[0]} features.")
            embeds[mask] = features.to(embeds.dtype)
            if deep is not None:
                deep[:, mask] = deep_features.to(deep.dtype)
        runs = [r for item in items for r in self.preprocessor.runs(item)]
        positions, delta = self._positions(ids_t, runs)
        self.prompts[slot] = PreparedPrompt(embeds, positions, deep, delta)

    def generate_multimodal(self, prompt: str, images=None, videos=None,
                            max_new_tokens: int = 32, video_fps: float = 2.0,
                            speculative=None) -> list[int]:
        """Greedy generation for a chat-templated prompt holding one vision placeholder per
        image/video; returns the new token ids only. `speculative` as for Session.generate
        (the tree's language verify graphs check the proposals)."""
        max_new_tokens = count_of(max_new_tokens, "max_new_tokens")
        if max_new_tokens < 1:
            raise TyllmError(f"max_new_tokens={max_new_tokens}: ask for at least one token.")
        if not prompt:
            raise TyllmError("The prompt is empty: give chat-templated text.")
        pre = self.preprocessor
        image_items = [pre.image(i) for i in images or []]
        video_items = [pre.video(list(v), video_fps) for v in videos or []]
        text, order = pre.expand(prompt, image_items, video_items)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        self._check_budget(len(ids), max_new_tokens, order)

        def prompt_logits():
            self.prepare(0, ids, order)
            return self.extend(ids, 0, slot=0)

        return self._greedy_after(ids, prompt_logits, max_new_tokens, True, speculative)
