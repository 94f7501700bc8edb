"""`tyllm eval`: perplexity on held-out text for the float model, a round-to-nearest int4
baseline, an AWQ checkpoint and a compiled tree on the emulated dies, in one table.

Held-out text defaults to the *last* CPython documentation topics (calibration's default reads
from the first ones); pass your own files for anything else. A tree is scored teacher-forced, one
decode step per token, from its own last-row logits.
"""

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tyllm.errors import TyllmError
from tyllm.quant.data import get_dataloader, load_texts
from tyllm.quant.groups import check_group_size, fake_quantize
from tyllm.quant.layers import decoder_layers, linears_of


@dataclass(frozen=True)
class Score:
    name: str
    perplexity: float
    tokens: int

    def as_json(self) -> dict:
        return {"name": self.name, "perplexity": self.perplexity, "tokens": self.tokens}


def held_out_blocks(tokenizer, source=None, blocks: int = 16, length: int = 256,
                    column: str = "article") -> list[list[int]]:
    texts = load_texts(source, column)
    if source is None:
        texts = texts[::-1]  # the default calibration reads from the front
    samples = get_dataloader(texts, tokenizer, num_max_orig_samples=len(texts),
                             max_sequence_length=length)
    return [s[0].tolist() for s in samples[:blocks]]


@torch.no_grad()
def hf_perplexity(model, blocks: list[list[int]]) -> Score:
    nll, count = 0.0, 0
    for block in blocks:
        ids = torch.tensor([block])
        logits = model(ids).logits[0, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += len(block) - 1
    return Score("", math.exp(nll / count), count)


def tree_perplexity(session, blocks: list[list[int]]) -> Score:
    nll, count = 0.0, 0
    for block in blocks:
        for i, token in enumerate(block[:-1]):
            logits = session.extend([token], i, slot=0).float()
            nll -= float(torch.log_softmax(logits, -1)[block[i + 1]])
        count += len(block) - 1
    return Score("", math.exp(nll / count), count)


@torch.no_grad()
def round_to_nearest(model, group_size: int):
    """A copy of `model` with every decoder linear fake-quantized to int4 (groups, zero points):
    the baseline AWQ must beat at the same group size."""
    model = copy.deepcopy(model)
    for layer in decoder_layers(model):
        for name, fc in linears_of(layer).items():
            check_group_size(fc.in_features, group_size, name)
            fc.weight.copy_(fake_quantize(fc.weight.float(), group_size, 4).to(fc.weight.dtype))
    return model


def evaluate(model_path: Path, awq_path: Path | None = None, tree: Path | None = None,
             rtn_group_size: int | None = None, source=None, blocks: int = 16,
             length: int = 256, workers: str = "threads") -> list[Score]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tyllm.quant.checkpoint import load_quantized_model, read_quantization_config

    if not Path(model_path).is_dir():
        raise TyllmError(f"Model folder {model_path} does not exist.")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = held_out_blocks(tokenizer, source, blocks, length)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    scores = [named(hf_perplexity(model, data), "float32")]
    group = rtn_group_size or (read_quantization_config(awq_path)["group_size"] if awq_path
                               else None)
    if group:
        rtn = round_to_nearest(model, group)
        scores.append(named(hf_perplexity(rtn, data), f"round-to-nearest int4, group {group}"))
    if awq_path is not None:
        awq = load_quantized_model(awq_path)
        scores.append(named(hf_perplexity(awq, data), f"AWQ int4 ({Path(awq_path).name})"))
    if tree is not None:
        from tyllm import runtime

        with runtime.load(tree, workers=workers) as session:
            scores.append(named(tree_perplexity(session, data), f"compiled tree ({tree})"))
    return scores


def named(score: Score, name: str) -> Score:
    return Score(name, score.perplexity, score.tokens)


def table(scores: list[Score]) -> str:
    lines = ["| model | perplexity | tokens |", "|---|---:|---:|"]
    lines += [f"| {s.name} | {s.perplexity:.3f} | {s.tokens} |" for s in scores]
    return "\n".join(lines)
