"""Writing a folder atomically: into a staging folder beside the destination, then moved into
place, so a failed or interrupted write leaves nothing that looks complete."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(dest: Path, write: Callable[[Path], None],
                     check_destination: Callable[[Path], None]) -> Path:
    """`check_destination(dest)` refuses a destination that must not be replaced; then
    `write(staging)` fills a fresh staging folder, which replaces `dest`."""
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        replace_folder(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def replace_folder(new: Path, dest: Path) -> None:
    """Moves `new` to `dest`; whatever was there is moved aside first and deleted last."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
