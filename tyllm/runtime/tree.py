"""An artifact tree opened for running: documents checked against the manifest and against each
other, every file they name proven inside the tree and listed, every library of the recorded
backend's kind (its suffix and first bytes); nothing loaded yet."""

import re
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.artifacts.manifest import inside, read_manifest, verify_files
from tyllm.backends import REGISTRY, UnknownBackend, get_backend
from tyllm.errors import ArtifactError, TyllmError

VISION_BUFFER_CONFIG = "visual/buffer_config.json"  # VLM trees (tyllm/artifacts/vlm_layout.py)
FILE_KEYS = ("library", "weights", "constants", "graph_params", "onnx", "params")


def named_files(document, keys: tuple[str, ...] = FILE_KEYS) -> list[str]:
    """Every file a buffer document names (values of `keys`, at any depth)."""
    if isinstance(document, list):
        return [name for item in document for name in named_files(item, keys)]
    if not isinstance(document, dict):
        return []
    own = [v for k, v in document.items() if k in keys and v is not None]
    return own + [name for k, v in document.items() if k not in keys
                  for name in named_files(v, keys)]


def first_bytes(path: Path, count: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(count)


def library_owner(path: Path) -> str | None:
    """The backend whose libraries begin as this file does, if any."""
    for backend in map(get_backend, REGISTRY):
        if first_bytes(path, len(backend.library_magic)) == backend.library_magic:
            return backend.name
    return None


def folder_of_trees(root: Path) -> list[str]:
    """The `<N>die` trees directly inside `root` (the folder above the trees)."""
    return sorted((p.name for p in root.iterdir()
                   if re.fullmatch(r"\d+die", p.name) and (p / layout.MANIFEST).is_file()),
                  key=lambda name: int(name[:-3]))


class Tree:
    def __init__(self, root: Path, dies: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArtifactError(f"Artifact tree {self.root} does not exist: run `tyllm compile` "
                                f"first, or pass the `<N>die` folder it wrote.")
        self._check_not_a_folder_of_trees()
        self.manifest = read_manifest(self.root)
        self._check_side_files()
        self.config = self.document(layout.CONFIG, "config")
        self.buffers = self.document(layout.BUFFER_CONFIG, "buffer_config")
        self.vision_buffers = (self.document(VISION_BUFFER_CONFIG, "buffer_config")
                               if self.config["kind"] == "vlm" else None)
        self.dies = self.config["dies"]
        self._check_die_count(dies)
        self._check_shapes()
        self._check_libraries()  # a tree for a backend this tyllm lacks fails here, once

    def file(self, name: str) -> Path:
        """A file the tree's documents name: inside the tree and listed in its manifest."""
        path = inside(self.root, name)
        if name not in self.manifest["files"]:
            raise ArtifactError(f"{path} is named by the tree's documents but not listed in its "
                                f"{layout.MANIFEST}: the tree was edited; recompile it.")
        return path

    def document(self, name: str, kind: str) -> dict:
        """A JSON document of the tree, its sha256 checked before it is read; the files it
        names are checked to lie inside the tree and be listed."""
        verify_files(self.root, self.manifest, [name])
        document = read_json(self.file(name), kind)
        for named in named_files(document):
            self.file(named)
        return document

    def _check_not_a_folder_of_trees(self) -> None:
        if (self.root / layout.MANIFEST).exists() or not (trees := folder_of_trees(self.root)):
            return
        raise ArtifactError(f"{self.root} is not a tree but the folder holding the trees "
                            f"{', '.join(trees)} (one per die count): pass the one to run, e.g. "
                            f"{self.root / trees[0]}.")

    def _check_libraries(self) -> None:
        """Every library must be one the recorded backend loads (its suffix, its first
        bytes): a tree relabelled with another backend is refused before a loader misreads
        it. A missing library is left to the sha256 check, which names it."""
        backend = self.backend
        documents = [self.buffers, self.vision_buffers or {}]
        for name in sorted({n for d in documents for n in named_files(d, ("library",))}):
            path = self.file(name)
            if path.is_file() and not (
                    name.endswith(backend.library_suffix)
                    and first_bytes(path, len(backend.library_magic)) == backend.library_magic):
                raise ArtifactError(self._foreign_library(name, path))

    def _foreign_library(self, name: str, path: Path) -> str:
        recorded, owner = self.config["backend"], library_owner(path)
        suffix, magic = self.backend.library_suffix, self.backend.library_magic
        what = (f"named without its suffix {suffix}" if owner == recorded else
                f"an {owner} library" if owner else
                f"no {recorded} library (those end in {suffix} and begin with {magic!r})")
        return (f"{self.root} records the backend {recorded!r} but {name} is {what}: the tree "
                f"was relabelled or damaged after its compile; recompile the model with "
                f"--backend {recorded}.")

    def _check_side_files(self) -> None:
        """Tokenizer and processor files are read by name from the root: one the manifest does
        not list was added after the compile and would silently change answers."""
        for name in layout.SIDE_FILES:
            path = self.root / name
            if (path.exists() or path.is_symlink()) and name not in self.manifest["files"]:
                raise ArtifactError(f"{path} is not listed in the tree's {layout.MANIFEST}: it "
                                    f"was added after the compile. Remove it, or recompile.")

    def _check_die_count(self, dies: int | None) -> None:
        named = re.fullmatch(r"(\d+)die", self.root.name)
        for source, n in (("requested", dies), ("folder name", int(named[1]) if named else None)):
            if n is not None and n != self.dies:
                raise ArtifactError(f"{self.root} was compiled for {self.dies} dies but {n} were "
                                    f"{source}: run it with {self.dies} dies or recompile with "
                                    f"dev_count={n} into a folder named {n}die.")

    def _check_shapes(self) -> None:
        """config.json's limits must be what the graphs hold: the runtime checks ids and
        positions against them before any graph sees one."""
        for entry in self.buffers["kv_cache"]:
            held = entry["k_cache"]["shape"][2]
            if held != self.max_kv:
                raise ArtifactError(f"{self.root}: config.json says max_kv_cache_size="
                                    f"{self.max_kv} but die {entry['die']}'s graphs hold {held} "
                                    f"positions: the documents disagree; recompile the tree.")
        widths = {}
        for g in self.buffers["graphs"]:
            widths.setdefault(g["seq_len"], {})[g["die"]] = g["outputs"][0]["shape"][-1]
        for m, per_die in widths.items():
            if sum(per_die.values()) != self.config["vocab_size"]:
                raise ArtifactError(f"{self.root}: config.json says vocab_size="
                                    f"{self.config['vocab_size']} but the seq_len {m} graphs "
                                    f"return {sum(per_die.values())} logits: the documents "
                                    f"disagree; recompile the tree.")

    def graphs_for(self, die: int) -> dict[tuple[int, int], dict]:
        """Die `die`'s one-sequence (batch 1) step graphs by (seq_len, KV window)."""
        return {(g["seq_len"], g["window"]): g for g in self.buffers["graphs"]
                if g["die"] == die and g.get("batch", 1) == 1 and g.get("kind") != "verify"}

    def batched_graphs_for(self, die: int) -> dict[tuple[int, int], dict]:
        """Die `die`'s batched (batch B > 1) decode graphs by (B, KV window)."""
        return {(g["batch"], g["window"]): g for g in self.buffers["graphs"]
                if g["die"] == die and g.get("batch", 1) > 1 and g.get("kind") != "verify"}

    def verify_graphs_for(self, die: int) -> dict[tuple[int, int], dict]:
        """Die `die`'s verify graphs (every row's logits, speculative decoding) by (batch, KV
        window); none unless the tree was compiled with speculative tokens."""
        return {(g.get("batch", 1), g["window"]): g for g in self.buffers["graphs"]
                if g["die"] == die and g.get("kind") == "verify"}

    @property
    def speculative_tokens(self) -> int:
        """K: the proposed tokens one verify step checks (0: the tree has no verify graphs)."""
        return int(self.config.get("speculative_tokens", 0))

    def check_verify_graphs(self) -> None:
        """Speculative decoding needs the tree's verify graphs (speculative_tokens > 0)."""
        if self.speculative_tokens == 0:
            raise TyllmError(f"The tree at {self.root} has no verify graphs: compile it with "
                             f"speculative_tokens=K (tyllm compile --speculative-tokens K) to "
                             f"decode speculatively.")

    @property
    def batch_sizes(self) -> list[int]:
        """Sequences one decode call can hold: [1] for a tree compiled without batch sizes."""
        return list(self.config.get("batch_sizes", [1]))

    def kv_cache_for(self, die: int) -> dict:
        return next(e for e in self.buffers["kv_cache"] if e["die"] == die)

    @property
    def seq_lens(self) -> list[int]:
        return list(self.config["seq_len_list"])

    @property
    def backend(self):
        """The backend the tree was compiled for (config.json), which loads its libraries."""
        name = self.config["backend"]
        try:
            return get_backend(name)
        except UnknownBackend as e:
            raise ArtifactError(f"{self.root} was compiled for the backend {name!r}, which this "
                                f"tyllm does not have ({e}): recompile it, or install the "
                                f"tyllm that has that backend.") from None

    @property
    def windows(self) -> list[int]:
        """The KV windows every step graph was compiled for (tyllm/artifacts/windows.py)."""
        return list(self.config["kv_windows"])

    @property
    def max_kv(self) -> int:
        return int(self.config["max_kv_cache_size"])
