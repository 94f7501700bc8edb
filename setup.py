"""The package list, which pyproject.toml cannot express: the top-level backends/ folder is
installed as `tyllm.backends` (a name that belongs to tyllm; `import backends` finds nothing)."""

from setuptools import find_packages, setup

BACKENDS = [f"tyllm.{name}" for name in find_packages(include=["backends*"])]

setup(packages=[*find_packages(include=["tyllm*"]), *BACKENDS],
      package_dir={"tyllm.backends": "backends"})
