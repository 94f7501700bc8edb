"""Programs compiled in parallel worker processes, from a user's script that has no
`if __name__ == "__main__":` guard, give a tree that verifies and matches HF (the program-cache
tests compile with jobs=1, in one process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from models import hf_greedy

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.tools.verify import verify_tree

ARGS = dict(max_kv_cache_size=32, seq_len_list=[1, 4], dev_count=2, use_cache=False,
            progress=False)

SCRIPT = """
import sys
from tyllm.build_util import build_and_compile_llm
build_and_compile_llm(sys.argv[1], sys.argv[2], max_kv_cache_size=32, seq_len_list=[1, 4],
                      dev_count=2, use_cache=False, progress=False, jobs=2)
print("compiled once")
"""


def report(tree: Path) -> dict:
    return json.loads((tree / "compile_report.json").read_text())


def graphs(tree: Path) -> list[dict]:
    return json.loads((tree / "buffer_config.json").read_text())["graphs"]


def test_workers_compile_a_tree_that_matches_hf(checkpoint_factory, tmp_path):
    ckpt = checkpoint_factory("qwen3")
    script = tmp_path / "compile_it.py"  # no __main__ guard: workers must not run it again
    script.write_text(SCRIPT)
    tree = tmp_path / "2die"
    done = subprocess.run([sys.executable, str(script), str(ckpt), str(tree)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("compiled once") == 1
    workers = report(tree)["workers"]
    assert len(workers) == 2 and [w["programs"] for w in workers] == [1, 1]
    assert all(w["busy_seconds"] > 0 and w["peak_rss_mb"] > 0 for w in workers)
    assert [(g["die"], g["seq_len"]) for g in report(tree)["graphs"]] == [
        (0, 1), (0, 4), (1, 1), (1, 4)]  # die by die, whichever worker finished first
    assert len({g["library"] for g in graphs(tree)}) == len(graphs(tree))
    assert all(c.ok for c in verify_tree(tree))
    prompt = [3, 14, 15, 92, 65, 35]
    with runtime.load(tree) as session:
        assert session.generate(prompt, 6, stop_at_eos=False) == hf_greedy(ckpt, prompt, 6)


@pytest.mark.parametrize("jobs", [-1, 1.5, True])
def test_a_bad_jobs_count_is_refused(checkpoint_factory, tmp_path, jobs):
    with pytest.raises(TyllmError, match=r"jobs=.* is invalid: give the number of compile"):
        build_and_compile_llm(checkpoint_factory("qwen3"), tmp_path / "2die", jobs=jobs, **ARGS)
    assert not (tmp_path / "2die").exists()
