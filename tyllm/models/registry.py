"""The registry of supported architectures: one folder each, looked up by HF architecture name."""

from tyllm.errors import TyllmError
from tyllm.models.llama import LLAMA
from tyllm.models.phi3 import PHI3
from tyllm.models.qwen2 import QWEN2
from tyllm.models.qwen3 import QWEN3
from tyllm.models.spec import ArchSpec
from tyllm.models.vlm.spec import vlm_for_config

MODELS: dict[str, ArchSpec] = {spec.name: spec for spec in (LLAMA, QWEN2, QWEN3, PHI3)}


def supported_architectures() -> list[str]:
    return sorted(a for spec in MODELS.values() for a in spec.hf_architectures)


def text_arch_for_config(config) -> ArchSpec:
    """The registry entry of a causal LM's layers, or of a VLM's text layers."""
    vlm = vlm_for_config(config)
    return MODELS[vlm.text_arch] if vlm is not None else arch_for_config(config)


def arch_for_config(config) -> ArchSpec:
    names = list(getattr(config, "architectures", None) or [])
    for spec in MODELS.values():
        if any(name in spec.hf_architectures for name in names):
            return spec
    raise TyllmError(f"Unsupported architecture {names or '(none in config.json)'}; "
                     f"tyllm compiles {supported_architectures()}. Add a folder under "
                     f"tyllm/models/ with a weight-name table to support another one.")
