from pathlib import Path

import pytest
from models import make_checkpoint  # tests/ is on sys.path (pytest's rootdir-relative import)


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """make(arch, **config overrides) -> HF folder, cached per argument set."""
    made: dict = {}

    def make(arch: str, seed: int = 0, **overrides) -> Path:
        key = (arch, seed, tuple(sorted(overrides.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{arch}-ckpt")
            made[key] = make_checkpoint(folder, arch, seed, **overrides)
        return made[key]

    return make


@pytest.fixture(scope="session")
def smollm2_path():
    from tyllm.smollm2 import prepare_smollm2

    return prepare_smollm2()
