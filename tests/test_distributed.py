"""Dies across "hosts" on torch.distributed: two torchrun launches on this machine, joined over
loopback through a c10d rendezvous, run a 3-die tree split 2 + 1 (workers="distributed") and
give the single-host tree's greedy tokens, batched decode and a KV window crossed included;
faults end every rank with one clear error and no hang."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.runtime.distributed.loopback import free_port, launch_loopback

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("distributed_job.py")
ENGINE_DRIVER = Path(__file__).with_name("distributed_engine.py")
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
PROMPTS = [[5, 17, 3, 99, 42, 7, 11, 150, 23, 64, 8, 31], [9, 4, 120, 77]]
NEW_TOKENS = 24  # the first prompt crosses the 32-position KV window while it decodes


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist-tree") / "3die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3", seed=11), out,
                                      max_kv_cache_size=96, seq_len_list=[1, 8], dev_count=3,
                                      export_onnx=False, progress=False, kv_windows=(32,),
                                      batch_size_list=[1, 2]))


def start(hosts: list[tuple[int, list[str]]], mark: str = "",
          env: dict | None = None) -> list[subprocess.Popen]:
    """One torchrun per "host" ((its --nproc-per-node, its command) in `hosts`), all joined at
    one c10d rendezvous on loopback."""
    return launch_loopback(hosts, dict(os.environ, OMP_NUM_THREADS="1", TYLLM_TEST_MARK=mark,
                                       **(env or {})))


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list:
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            said = "\n=====\n".join((q.communicate()[1] or "")[-3000:] for q in procs)
            raise AssertionError(f"a torchrun launch hung:\n{said}") from None
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def run_tree(path: Path, prompt: str = "w5 w17 w3 w99") -> list[str]:
    return ["-m", "tyllm", "run", str(path), "--raw", "--prompt", prompt, "--max-new-tokens",
            "6", "--workers", "distributed"]


def job_file(tmp_path: Path, tree: Path, repeat: int = 1) -> tuple[Path, Path]:
    job, out = tmp_path / "job.json", tmp_path / "out.json"
    job.write_text(json.dumps({"tree": str(tree), "prompts": PROMPTS, "new_tokens": NEW_TOKENS,
                               "repeat": repeat, "out": str(out)}))
    return job, out


def test_two_hosts_give_the_single_host_tokens(tree, tmp_path):
    job, out = job_file(tmp_path, tree)
    runs = finish(start([(2, [str(DRIVER), str(job)]), (1, [str(DRIVER), str(job)])]))
    assert all(r.returncode == 0 for r in runs), "\n".join(r.stderr[-3000:] for r in runs)
    with runtime.load(tree) as session:
        want = {"single": [session.generate(p, NEW_TOKENS, stop_at_eos=False) for p in PROMPTS],
                "batch": session.generate_batch(PROMPTS, NEW_TOKENS, stop_at_eos=False)}
    assert json.loads(out.read_text()) == want


def test_tyllm_run_prints_on_rank_0_only(tree):
    alone = subprocess.run([sys.executable, *run_tree(tree)[:-2]], capture_output=True,
                           text=True)
    runs = finish(start([(2, run_tree(tree)), (1, run_tree(tree))]))
    assert all(r.returncode == 0 for r in runs), "\n".join(r.stderr[-3000:] for r in runs)
    assert alone.returncode == 0 and alone.stdout.strip()
    assert "".join(r.stdout for r in runs) == alone.stdout


def test_a_wrong_rank_count_tree_copy_or_die_ends_every_rank(tree, tmp_path):
    runs = finish(start([(1, run_tree(tree)), (1, run_tree(tree))]))
    assert all(r.returncode != 0 for r in runs)
    assert all("The job has 2 ranks but the tree has 3 dies" in r.stderr for r in runs)
    other = tmp_path / "copy" / "3die"
    shutil.copytree(tree, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text() + "\n")
    runs = finish(start([(2, run_tree(tree)), (1, run_tree(other))]))
    assert all(r.returncode != 0 for r in runs)
    assert all("The tree differs between hosts" in r.stderr for r in runs)
    part = tmp_path / "part" / "3die"  # a host's copy without the die torchrun gives it
    shutil.copytree(tree, part, ignore=shutil.ignore_patterns("*die2*"))
    runs = finish(start([(2, run_tree(tree)), (1, run_tree(part))]))
    assert all(r.returncode != 0 for r in runs)
    assert all(re.search(r"lacks \d+ file\(s\) of die 2 .* copy the whole tree", r.stderr)
               for r in runs)
    alone = subprocess.run([sys.executable, *run_tree(tree)], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "RANK"})
    assert alone.returncode == 2 and "torchrun" in alone.stderr


def rank_pids(mark: str, rank: int) -> list[int]:
    """The processes of this test's job that torchrun started as `rank`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"TYLLM_TEST_MARK={mark}".encode() in env and f"RANK={rank}".encode() in env \
                and b"LOCAL_RANK=" in b"\0".join(env):
            pids.append(int(entry.name))
    return pids


def test_a_killed_rank_ends_every_rank(tree, tmp_path):
    job, out = job_file(tmp_path, tree, repeat=1000)
    mark = f"kill-{os.getpid()}"
    procs = start([(2, [str(DRIVER), str(job)]), (1, [str(DRIVER), str(job)])], mark)
    deadline = time.monotonic() + 240
    while not out.with_suffix(".started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in rank_pids(mark, 2):
        os.kill(pid, signal.SIGKILL)
    runs = finish(procs, timeout=120)
    assert not out.exists() and all(r.returncode != 0 for r in runs)
    said = "".join(r.stderr for r in runs)
    assert "die 2 (rank 2" in said and "ended: its process is gone" in said


def test_llm_on_rank_0_drives_the_dies_of_every_host(tree, tmp_path):
    """vLLM's LLM(...) in a script torchrun starts on both hosts: rank 0's engine decodes both
    prompts together on the 3 ranks' dies (follow_rank_0 keeps the others serving)."""
    out = tmp_path / "out.json"
    args = [str(ENGINE_DRIVER), str(tree), json.dumps(PROMPTS), str(NEW_TOKENS), str(out)]
    runs = finish(start([(2, args), (1, args)], env=ENGINE_ENV))
    assert all(r.returncode == 0 for r in runs), "\n".join(r.stderr[-3000:] for r in runs)
    with runtime.load(tree) as session:
        want = session.generate_batch(PROMPTS, NEW_TOKENS, stop_at_eos=False)
    assert json.loads(out.read_text()) == want


def completion(port: int, prompt: list[int]) -> list[int]:
    body = json.dumps({"model": "dies", "prompt": prompt, "max_tokens": NEW_TOKENS,
                       "temperature": 0, "ignore_eos": True, "return_token_ids": True})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body.encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())["choices"][0]["token_ids"]


def wait_until_serving(port: int, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise AssertionError("\n".join(r.stderr[-3000:] for r in finish(procs)))
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(1)
    finish(procs, timeout=1)


def test_tyllm_serve_on_rank_0_and_its_dies_on_every_host(tree):
    """`torchrun ... -m tyllm serve TREE --workers distributed` on both hosts: rank 0 serves
    two users at once on the 3 ranks' dies; when it stops, every rank leaves cleanly."""
    port, mark = free_port(), f"serve-{os.getpid()}"
    args = ["-m", "tyllm", "serve", str(tree), "--workers", "distributed", "--port", str(port),
            "--served-model-name", "dies", "--max-num-seqs", "2", "--dtype", "float32",
            "--gpu-memory-utilization", "0.1", "--enforce-eager"]
    procs = start([(2, args), (1, args)], mark, env=ENGINE_ENV)
    try:
        wait_until_serving(port, procs)
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda p: completion(port, p), PROMPTS))
    finally:
        pids = rank_pids(mark, 0)
        for pid in pids:  # rank 0's own process (the server), not the engine it started
            if int(Path(f"/proc/{pid}/stat").read_text().split()[3]) not in pids:
                os.kill(pid, signal.SIGINT)
    runs = finish(procs)
    assert all(r.returncode == 0 for r in runs), "\n".join(r.stderr[-3000:] for r in runs)
    with runtime.load(tree) as session:
        assert got == [session.generate(p, NEW_TOKENS, stop_at_eos=False) for p in PROMPTS]


def test_engines_on_distributed_dies_need_a_tree_and_rank_0(tree, checkpoint_factory,
                                                            monkeypatch):
    from tyllm.errors import TyllmError
    from tyllm.runtime.distributed import check_engine_rank
    from tyllm.vllm_ext.artifacts import EngineTree, check_distributed
    from tyllm.vllm_ext.serve import serve

    checkpoint = checkpoint_factory("qwen3", seed=11)
    with pytest.raises(TyllmError, match=r"serves a compiled tree.*tyllm compile"):
        serve([str(checkpoint), "--workers", "distributed"])
    with pytest.raises(TyllmError, match=r"serves a compiled tree.*copy it to every host"):
        check_distributed(EngineTree(checkpoint, tree.parent / "absent", 3, 96, (1, 8),
                                     "distributed"), vlm=False)
    check_distributed(EngineTree(checkpoint, tree, 3, 96, (1, 8), "distributed"), vlm=False)
    for name, value in {"RANK": "1", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TyllmError, match=r"runs on rank 0, but this is rank 1.*follow_rank_0"):
        check_engine_rank()
