"""Docker cannot run here: check the Dockerfiles statically and the install they run for real."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
CREDENTIALS = re.compile(r"(password|passwd|secret|token|api[_-]?key|docker\s+login|"
                         r"AKIA[0-9A-Z]{16})", re.IGNORECASE)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    return [tuple(line.split(None, 1)) for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def copy_sources(dockerfile: Path) -> list[str]:
    return [src for op, args in instructions(dockerfile) if op == "COPY"
            for src in args.split()[:-1]]


def test_both_images_exist():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.compile", "Dockerfile.quant"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_consistent_with_the_repository(dockerfile):
    for src in copy_sources(dockerfile):
        assert (ROOT / src).exists(), f"COPY source {src} is missing"
    ops = dict(instructions(dockerfile))
    assert ops["ENTRYPOINT"] == '["tyllm"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tyllm"] == "tyllm.cli:main"
    runs = [args for op, args in instructions(dockerfile) if op == "RUN"]
    assert any("bash scripts/install.sh" in r for r in runs)
    assert "bash scripts/install.sh" in (ROOT / "README.md").read_text()
    assert not CREDENTIALS.search(dockerfile.read_text())


def image_context(dockerfile: Path, dest: Path) -> Path:
    """The files the image gets, copied as its COPY lines copy them."""
    dest.mkdir(parents=True)
    for src in copy_sources(dockerfile):
        path = ROOT / src
        if path.is_dir():
            shutil.copytree(path, dest / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, dest / src)
    return dest


@pytest.mark.slow
def test_install_script_in_a_venv_then_doctor_and_a_tiny_compile(tmp_path, checkpoint_factory):
    """install.sh in a new venv over this interpreter's packages (a from-scratch install of
    torch and vLLM is what .ci/run does on every fresh machine: 3+ minutes, not repeated here),
    then the console script's doctor, compile and run from the image's build context."""
    context = image_context(ROOT / "docker" / "Dockerfile.compile", tmp_path / "opt")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # keep pip's settings
    env |= {"PATH": f"{venv / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(venv)}
    run = dict(cwd=context, env=env, check=True, capture_output=True, text=True, timeout=1500)
    subprocess.run(["bash", "scripts/install.sh", "full"], **run)  # as the Dockerfile runs it
    doctor = subprocess.run(["tyllm", "doctor"], **run)
    assert "all checks passed" in doctor.stdout
    out = tmp_path / "tree" / "1die"
    ckpt = checkpoint_factory("qwen2")
    subprocess.run(["tyllm", "compile", ckpt, out, "--seq-lens", "1,4", "--max-kv", "32",
                    "--quiet"], **run)
    answer = subprocess.run(["tyllm", "run", out, "--raw", "--prompt", "w3 w4 w5",
                             "--max-new-tokens", "4"], **run)
    assert len(answer.stdout.split()) == 4
    assert "all checks passed" in subprocess.run(["tyllm", "doctor", out], **run).stdout
