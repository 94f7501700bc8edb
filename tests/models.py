"""Small randomly initialised checkpoints of the real transformers classes, saved as HF folders."""

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tyllm.models.registry import MODELS


def hf_classes(arch: str):
    """(config class, model class) of a registry architecture ("qwen3", "phi3", ...): the
    transformers class its entry names first."""
    model_cls = getattr(transformers, MODELS[arch].hf_architectures[0])
    return model_cls.config_class, model_cls


ARCH_OVERRIDES = {"phi3": {"pad_token_id": None}}  # Phi-3's default pad id is past a tiny vocab

SPECULATIVE_TOKENS = 4  # the verify width of conftest.py::spec_tree
BASE = dict(vocab_size=250, hidden_size=48, intermediate_size=90, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
            initializer_range=0.05, tie_word_embeddings=False, eos_token_id=None, bos_token_id=None)


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def make_checkpoint(folder: Path, arch: str, seed: int = 0, **overrides) -> Path:
    config_cls, model_cls = hf_classes(arch)
    config = config_cls(**(BASE | ARCH_OVERRIDES.get(arch, {}) | overrides))
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    word_tokenizer(config.vocab_size).save_pretrained(folder)
    return folder


def hf_greedy(folder: Path, input_ids: list[int], max_new_tokens: int, dtype=torch.float32):
    return greedy(load_hf(folder, dtype), input_ids, max_new_tokens)


def greedy(model, input_ids: list[int], max_new_tokens: int) -> list[int]:
    """HF greedy `generate`: the new tokens only."""
    out = model.generate(torch.tensor([input_ids]), max_new_tokens=max_new_tokens,
                         do_sample=False, min_new_tokens=0)
    return out[0, len(input_ids):].tolist()


def load_hf(folder: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
