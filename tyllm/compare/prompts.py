"""The prompt both sides run: token ids, the tree's prefill chunks with each chunk's graph
inputs, HF's extra forward inputs, and (VLM trees) how a session slot gets the multimodal
prompt. A VLM prompt is one image plus text, prepared by the tree's own session (its vision
programs, rope index and embedding table), exactly as `generate_multimodal` does."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tyllm.artifacts import layout
from tyllm.artifacts.params import load_params
from tyllm.errors import TyllmError
from tyllm.runtime.session import check_token_ids, plan_chunks
from tyllm.runtime.tree import Tree

DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."
DEFAULT_IMAGE_PROMPT = "Describe this image."


@dataclass
class Prompt:
    ids: list[int]
    chunks: list[tuple[int, int, int]]  # (start, valid rows, seq_len): the runtime's plan
    inputs: list  # each chunk's leading graph inputs
    hf_extra: Callable[[list[int]], dict]  # HF's other forward inputs for a token list
    prepare: Callable[[int], None] | None = None  # VLM: puts the prompt into a session slot
    image: object = None  # VLM: the VisionItem (its size and pixel rows)


def check_ids(tree: Tree, ids: list[int], new_tokens: int) -> None:
    """The session's own id check; the fit is one position stricter than `generate`'s: every
    one of HF's generated tokens is fed to the tree (teacher forcing)."""
    room = tree.max_kv
    if not ids:
        raise TyllmError("The prompt is empty: give at least one token.")
    check_token_ids(tree, ids)
    if new_tokens < 1:
        raise TyllmError(f"new_tokens={new_tokens}: ask for at least one token.")
    if len(ids) + new_tokens > room:
        raise TyllmError(f"The prompt has {len(ids)} tokens and {new_tokens} new tokens are "
                         f"asked for, but the tree's KV cache holds {room}: shorten the prompt "
                         f"or ask for at most {max(room - len(ids), 0)} new tokens.")


def text_ids(tree: Tree, prompt: str | None, tokens, chat: bool) -> list[int]:
    """`tokens` as given, or `prompt` through the tree's tokenizer."""
    if tokens is not None:
        return [int(t) for t in tokens]
    from tyllm.text import encode_prompt

    try:
        return encode_prompt(tree.root, prompt or DEFAULT_PROMPT, chat)
    except (OSError, ValueError) as e:
        raise TyllmError(f"{tree.root} has no usable tokenizer ({type(e).__name__}): give the "
                         f"prompt as token ids (--tokens FILE).") from None


def text_prompt(tree: Tree, prompt: str | None, tokens, chat: bool, new_tokens: int) -> Prompt:
    ids = text_ids(tree, prompt, tokens, chat)
    check_ids(tree, ids, new_tokens)
    chunks = plan_chunks(len(ids), tree.seq_lens)
    table = (load_params(tree.file(layout.EMBEDDING))["embed_tokens"]
             if tree.config["embedding_as_input"] else None)
    inputs = []
    for start, valid, m in chunks:
        rows = torch.tensor(ids[start:start + valid] + [0] * (m - valid), dtype=torch.int64)
        inputs.append(rows if table is None else table[rows])
    return Prompt(ids, chunks, inputs, lambda _: {})


def vlm_prompt(session, prompt: str | None, image, tokens, chat: bool,
               new_tokens: int) -> Prompt:
    """One image and the prompt text, chat-templated as `tyllm run --image` does, prepared in
    slot 0 of the VLM `session`."""
    from PIL import Image

    from tyllm.runtime.vlm.prompt import multimodal_prompt, open_image

    root = session.tree.root
    if tokens is not None or image is None:
        raise TyllmError(f"{root} is a VLM tree: give one image (--image PATH) and the prompt "
                         f"as text (--prompt), not token ids.")
    picture = image if isinstance(image, Image.Image) else open_image(str(Path(image)))
    item = session.preprocessor.image(picture)
    text = multimodal_prompt(root, prompt or DEFAULT_IMAGE_PROMPT, 1, 0, chat=chat)
    expanded, order = session.preprocessor.expand(text, [item], [])
    ids = session.tokenizer.encode(expanded, add_special_tokens=False)
    check_ids(session.tree, ids, new_tokens)
    session.prepare(0, ids, order)
    chunks = plan_chunks(len(ids), session.tree.seq_lens)
    inputs = [session.chunk_rows(ids[s:s + v], s, m, slot=0) for s, v, m in chunks]
    pixels = torch.cat(item.slices)
    grid = torch.tensor([[len(item.slices), *item.grid]])
    marks = session.tree.config["tokens"]

    def hf_extra(tokens: list[int]) -> dict:
        t = torch.tensor([tokens])
        types = (t == marks["image_token_id"]).long() + 2 * (t == marks["video_token_id"]).long()
        return {"pixel_values": pixels, "image_grid_thw": grid, "mm_token_type_ids": types,
                "attention_mask": torch.ones_like(t)}

    return Prompt(ids, chunks, inputs, hf_extra, lambda slot: session.prepare(slot, ids, order),
                  item)
