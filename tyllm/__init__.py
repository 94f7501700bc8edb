"""tyllm: ahead-of-time compilation of HF LLMs into per-die artifacts for multi-die edge NPUs.

Where things live: docs/ARCHITECTURE.md ("Where things live"). Modules that moved keep their old
import paths (`tyllm.compiler`, `tyllm.request`, `tyllm.vlm.compiler`, ...): importing one gives
the module at its new place.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

MOVED = {  # old import path -> where the module lives now
    "tyllm.budget": "tyllm.compile.budget",
    "tyllm.compile_core": "tyllm.compile.core",
    "tyllm.compile_jobs": "tyllm.compile.jobs",
    "tyllm.compile_worker": "tyllm.compile.worker",
    "tyllm.compiler": "tyllm.compile.llm",
    "tyllm.module_programs": "tyllm.compile.programs",
    "tyllm.step_programs": "tyllm.compile.steps",
    "tyllm.step_capture": "tyllm.compile.step_capture",
    "tyllm.program_cache": "tyllm.compile.program_cache",
    "tyllm.report": "tyllm.compile.report",
    "tyllm.request": "tyllm.compile.request",
    "tyllm.memory": "tyllm.compile.memory",
    "tyllm.vlm": "tyllm.runtime.vlm",
    "tyllm.vlm.compiler": "tyllm.compile.vlm",
    "tyllm.vlm.vision_compile": "tyllm.compile.vision",
    "tyllm.vlm.request": "tyllm.compile.vlm_request",
    "tyllm.vlm.layout": "tyllm.artifacts.vlm_layout",
    "tyllm.vlm.processor": "tyllm.models.vlm.processor",
    "tyllm.vlm.inputs": "tyllm.runtime.vlm.inputs",
    "tyllm.vlm.runners": "tyllm.runtime.vlm.runners",
    "tyllm.vlm.session": "tyllm.runtime.vlm.session",
    "tyllm.vlm.load": "tyllm.runtime.vlm.load",
    "tyllm.vlm.prompt": "tyllm.runtime.vlm.prompt",
    "tyllm.windows": "tyllm.artifacts.windows",
    "tyllm.staging": "tyllm.artifacts.staging",
    "tyllm.worker_kinds": "tyllm.runtime.worker_kinds",
    "tyllm.verify": "tyllm.tools.verify",
    "tyllm.doctor": "tyllm.tools.doctor",
    "tyllm.smollm2": "tyllm.tools.smollm2",
    "tyllm.arg_types": "tyllm.tools.arg_types",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old import path of MOVED and answers with the module at its new place (the same
    module object, so names patched or read through either path agree)."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=name == "tyllm.vlm")

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system sets the old name's spec next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # the module keeps its own spec


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before the path finder: tyllm.vlm's children
