"""A loaded VLM tree: `generate_multimodal(prompt, images, videos)` on emulated dies.

Per request: preprocess (tyllm.vlm.inputs) -> vision programs per temporal slice (die 0's merged
features; every vision die computes the same replicated merger) -> the rope-index graph ->
features scattered into the text embeddings (and deepstack rows) -> prefill chunks through each
language die's mrope + language graphs -> greedy decode at positions index + rope delta.
"""

import torch

from backends.emulated_cpu import DieProgram
from tyllm.errors import TyllmError
from tyllm.runtime.session import Session, plan_chunks
from tyllm.text import load_tokenizer
from tyllm.vlm import layout
from tyllm.vlm.inputs import VISION_END, VISION_START, Preprocessor, VisionItem
from tyllm.vlm.processor import image_processor


def preprocessor_for(tree) -> Preprocessor:
    vision = tree.config["vision"]
    sizes = [(tuple(s["size"]), tuple(s["grid"])) for s in vision["sizes"]]
    return Preprocessor(image_processor(tree.root), sizes, vision["merge_size"],
                        vision["temporal_patch_size"], tree.config["modalities"],
                        tree.config["video_frames_as_images"], tree.config["tokens_per_second"])


class VlmSession(Session):
    def __init__(self, tree, workers, vision_workers):
        super().__init__(tree, workers)
        self.vision = vision_workers
        self.tokenizer = load_tokenizer(tree.root)
        self.preprocessor = preprocessor_for(tree)
        self.tokens = tree.config["tokens"]
        self.deepstack_layers = tree.config["vision"]["deepstack_layers"]
        rope = tree.buffers["rope_index"]
        self.rope_index = DieProgram(tree.root / rope["library"], [])
        self.max_runs = rope["max_runs"]
        self.deltas: dict[int, int] = {}  # slot -> rope delta of its sequence
        self.prompts: dict[int, tuple] = {}  # slot -> (embeds, positions, deepstack) of its prompt

    def close(self) -> None:
        super().close()
        if self.vision is not None:
            self.vision.close()
            self.vision = None

    # -- language dies -------------------------------------------------------------------------
    def _chunk(self, embeds, positions, deepstack, start: int, seq_len: int, slot: int):
        valid = embeds.shape[0]
        pad = seq_len - valid
        embeds = torch.nn.functional.pad(embeds, (0, 0, 0, pad))
        positions = torch.nn.functional.pad(positions, (0, pad))
        if deepstack is not None:
            deepstack = torch.nn.functional.pad(deepstack, (0, 0, 0, pad))
        slices = self.workers.step(seq_len, embeds, positions, deepstack, start, valid, slot)
        return torch.cat(slices, dim=-1)[0]

    def _run(self, embeds, positions, deepstack, start: int, slot: int) -> torch.Tensor:
        if self.workers is None:
            raise TyllmError("This session is closed: load the tree again.")
        logits = None
        for offset, valid, m in plan_chunks(embeds.shape[0], self.tree.seq_lens):
            rows = slice(offset, offset + valid)
            deep = deepstack[:, rows] if deepstack is not None else None
            logits = self._chunk(embeds[rows], positions[:, rows], deep, start + offset, m, slot)
        return logits

    def _rows(self, tokens: list[int], start: int, slot: int):
        """Embeddings, positions and deepstack rows of `tokens` at `start`..: from the slot's
        prepared multimodal prompt where they fall inside it, else text rows (index + delta)."""
        embeds = self.embedding[torch.tensor(tokens)]
        pos = (torch.arange(start, start + len(tokens)) + self.deltas.get(slot, 0)).expand(3, -1)
        pos = pos.contiguous()
        deep = (torch.zeros(self.deepstack_layers, len(tokens), embeds.shape[1], dtype=embeds.dtype)
                if self.deepstack_layers else None)
        prepared = self.prompts.get(slot)
        if prepared is not None and start < prepared[0].shape[0]:
            inside = slice(start, min(start + len(tokens), prepared[0].shape[0]))
            n = inside.stop - inside.start
            embeds[:n], pos[:, :n] = prepared[0][inside], prepared[1][:, inside]
            if deep is not None:
                deep[:, :n] = prepared[2][:, inside]
        return embeds, pos, deep

    def extend(self, tokens: list[int], start: int, slot: int) -> torch.Tensor:
        if start + len(tokens) > self.tree.max_kv:
            raise TyllmError(f"Positions up to {start + len(tokens)} exceed the KV cache of "
                             f"{self.tree.max_kv}: recompile with a larger --max_model_len.")
        return self._run(*self._rows(tokens, start, slot), start, slot)

    def _step(self, tokens: list[int], start: int, seq_len: int, slot: int = 0) -> torch.Tensor:
        return self.extend(tokens, start, slot)

    def release(self, slot: int) -> None:
        """Forgets a slot's prepared prompt (its request finished)."""
        self.prompts.pop(slot, None)
        self.deltas.pop(slot, None)

    def prefill(self, input_ids: list[int]) -> torch.Tensor:
        pads = {self.tokens["image_token_id"], self.tokens["video_token_id"]}
        if pads & set(input_ids):
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

    def _positions(self, ids: torch.Tensor, runs) -> tuple[torch.Tensor, int]:
        kinds = ((ids == self.tokens["image_token_id"]).long()
                 + 2 * (ids == self.tokens["video_token_id"]).long())
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
        deep = (torch.zeros(self.deepstack_layers, len(ids), embeds.shape[1], dtype=embeds.dtype)
                if self.deepstack_layers else None)
        if items:
            features, deep_features = self._features(items)
            mask = self._vision_mask(ids_t)
            if int(mask.sum()) != features.shape[0]:
                raise TyllmError(f"The prompt holds {int(mask.sum())} vision pads but the "
                                 f"images/videos give {features.shape[0]} features.")
            embeds[mask] = features.to(embeds.dtype)
            if deep is not None:
                deep[:, mask] = deep_features.to(deep.dtype)
        runs = [r for item in items for r in self.preprocessor.runs(item)]
        positions, delta = self._positions(ids_t, runs)
        self.prompts[slot] = (embeds, positions, deep)
        self.deltas[slot] = delta

    def generate_multimodal(self, prompt: str, images=None, videos=None,
                            max_new_tokens: int = 32, video_fps: float = 2.0) -> list[int]:
        """Greedy generation for a chat-templated prompt holding one vision placeholder per
        image/video; returns the new token ids only."""
        if max_new_tokens < 1:
            raise TyllmError(f"max_new_tokens={max_new_tokens}: ask for at least one token.")
        if not prompt:
            raise TyllmError("The prompt is empty: give chat-templated text.")
        pre = self.preprocessor
        image_items = [pre.image(i) for i in images or []]
        video_items = [pre.video(list(v), video_fps) for v in videos or []]
        text, _, order = pre.expand(prompt, image_items, video_items)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        self._check_budget(len(ids), max_new_tokens, order)
        self.prepare(0, ids, order)
        logits = self.extend(ids, 0, slot=0)
        return self._decode(logits, len(ids), max_new_tokens)

    def _vision_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.tokens["image_token_id"]) | (ids == self.tokens["video_token_id"])

    def _decode(self, logits, length: int, max_new_tokens: int) -> list[int]:
        out = []
        for i in range(max_new_tokens):
            token = int(torch.argmax(logits))
            out.append(token)
            if token in self.eos or i == max_new_tokens - 1:
                break
            logits = self.extend([token], length + i, slot=0)
        return out
