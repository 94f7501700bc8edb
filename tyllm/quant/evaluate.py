"""`tyllm eval`: perplexity on held-out text for the float model, a round-to-nearest int4
baseline, an AWQ checkpoint and a compiled tree on the emulated dies, in one table; and the
greedy next-token accuracy of each, plus of a model served behind an OpenAI-compatible API.

Held-out text defaults to the *last* CPython documentation topics (calibration's default reads
from the first ones); pass your own files for anything else. A tree is scored teacher-forced, one
decode step per token, from its own last-row logits. Accuracy is measured at probe positions
(every `stride`-th token of a block): does greedy decoding of the prefix give the next token?
"""

import copy
import math
from dataclasses import replace
from pathlib import Path

import torch

from tyllm.checkpoint import load_config
from tyllm.compile.request import check_model_folder
from tyllm.quant.data import get_dataloader, load_texts
from tyllm.quant.groups import check_group_size, fake_quantize
from tyllm.quant.layers import decoder_layers, linears_of
from tyllm.quant.scores import Score, probe_positions


class Tally:
    """Negative log-likelihood and probe hits over the blocks of one model."""

    def __init__(self, stride: int):
        self.stride, self.nll, self.count, self.hits, self.probes = stride, 0.0, 0, 0, 0

    def add_block(self, logits: torch.Tensor, block: list[int]) -> None:
        """`logits` [len(block) - 1, V]: row i predicts block[i + 1]."""
        target = torch.tensor(block[1:])
        self.nll += float(torch.nn.functional.cross_entropy(logits.float(), target,
                                                            reduction="sum"))
        self.count += len(target)
        probes = probe_positions(block, self.stride)
        self.hits += int((logits[probes].argmax(-1) == target[probes]).sum())
        self.probes += len(probes)

    def score(self, name: str = "") -> Score:
        accuracy = self.hits / self.probes if self.probes else None
        return Score(name, math.exp(self.nll / self.count), self.count, accuracy, self.probes)


def held_out_blocks(tokenizer, source=None, blocks: int = 16, length: int = 256,
                    column: str = "article") -> list[list[int]]:
    texts = load_texts(source, column)
    if source is None:
        texts = texts[::-1]  # the default calibration reads from the front
    samples = get_dataloader(texts, tokenizer, num_max_orig_samples=len(texts),
                             max_sequence_length=length)
    return [s[0].tolist() for s in samples[:blocks]]


@torch.no_grad()
def hf_score(model, blocks: list[list[int]], stride: int = 16) -> Score:
    """Perplexity and probe accuracy of a HF model, one forward pass per block."""
    tally = Tally(stride)
    for block in blocks:
        tally.add_block(model(torch.tensor([block])).logits[0, :-1], block)
    return tally.score()


def tree_score(session, blocks: list[list[int]], stride: int = 16) -> Score:
    """Perplexity and probe accuracy of a compiled tree, one decode step per token."""
    tally = Tally(stride)
    for block in blocks:
        rows = [session.extend([token], i, slot=0).reshape(-1).float()
                for i, token in enumerate(block[:-1])]
        tally.add_block(torch.stack(rows), block)
    return tally.score()


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


def check_inputs(model_path: Path, awq_path: Path | None, tree: Path | None) -> None:
    """Every folder named, checked before minutes of scoring start."""
    from tyllm.quant.checkpoint import quantized_format
    from tyllm.runtime.tree import Tree

    check_model_folder(model_path)
    load_config(model_path)
    if awq_path is not None:
        quantized_format(Path(awq_path))
    if tree is not None:
        Tree(Path(tree))


def evaluate(model_path: Path, awq_path: Path | None = None, tree: Path | None = None,
             rtn_group_size: int | None = None, source=None, blocks: int = 16,
             length: int = 256, workers: str = "threads", api=None,
             stride: int = 16) -> list[Score]:
    """`api`: an ApiTarget (tyllm.quant.api_eval) whose served model is scored too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tyllm.quant.checkpoint import load_quantized_model, quantized_format

    check_inputs(Path(model_path), awq_path, tree)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = held_out_blocks(tokenizer, source, blocks, length)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    scores = [named(hf_score(model, data, stride), "float32")]
    group = rtn_group_size or (quantized_format(awq_path).group_size if awq_path else None)
    if group:
        rtn = round_to_nearest(model, group)
        scores.append(named(hf_score(rtn, data, stride),
                            f"round-to-nearest int4, group {group}"))
    if awq_path is not None:
        awq = load_quantized_model(awq_path)
        scores.append(named(hf_score(awq, data, stride),
                            f"AWQ int4 ({Path(awq_path).name})"))
    if tree is not None:
        from tyllm import runtime

        with runtime.load(tree, workers=workers) as session:
            scores.append(named(tree_score(session, data, stride),
                                f"compiled tree ({tree})"))
    if api is not None:
        from tyllm.quant.api_eval import served_accuracy

        scores.append(served_accuracy(api, data, stride))
    return scores


def named(score: Score, name: str) -> Score:
    return replace(score, name=name)


def table(scores: list[Score]) -> str:
    lines = ["| model | perplexity | next-token accuracy | tokens | probes |",
             "|---|---:|---:|---:|---:|"]
    for s in scores:
        ppl = "n/a (served)" if s.perplexity is None else f"{s.perplexity:.3f}"
        acc = "n/a" if s.accuracy is None else f"{s.accuracy:.2%}"
        lines.append(f"| {s.name} | {ppl} | {acc} | {s.tokens} | {s.probes} |")
    return "\n".join(lines)
