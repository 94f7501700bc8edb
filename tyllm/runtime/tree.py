"""An artifact tree opened for running: documents read and checked, nothing loaded yet."""

import re
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.artifacts.manifest import read_manifest, verify_files
from tyllm.errors import ArtifactError


class Tree:
    def __init__(self, root: Path, dies: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArtifactError(f"Artifact tree {self.root} does not exist: run `tyllm compile` "
                                f"first, or pass the `<N>die` folder it wrote.")
        self.manifest = read_manifest(self.root)
        self.config = read_json(self.root / layout.CONFIG, "config")
        self.buffers = read_json(self.root / layout.BUFFER_CONFIG, "buffer_config")
        self.dies = self.config["dies"]
        self._check_die_count(dies)

    def _check_die_count(self, dies: int | None) -> None:
        named = re.fullmatch(r"(\d+)die", self.root.name)
        for source, n in (("requested", dies), ("folder name", int(named[1]) if named else None)):
            if n is not None and n != self.dies:
                raise ArtifactError(f"{self.root} was compiled for {self.dies} dies but {n} were "
                                    f"{source}: run it with {self.dies} dies or recompile with "
                                    f"dev_count={n}.")

    def graphs_for(self, die: int) -> dict[int, dict]:
        return {g["seq_len"]: g for g in self.buffers["graphs"] if g["die"] == die}

    def kv_cache_for(self, die: int) -> dict:
        return next(e for e in self.buffers["kv_cache"] if e["die"] == die)

    def verify_die_files(self, die: int) -> None:
        names = {name for g in self.graphs_for(die).values()
                 for name in (g["library"], g["weights"], g["constants"], g["graph_params"])
                 if name}
        verify_files(self.root, self.manifest, sorted(names))

    @property
    def seq_lens(self) -> list[int]:
        return list(self.config["seq_len_list"])

    @property
    def max_kv(self) -> int:
        return int(self.config["max_kv_cache_size"])
