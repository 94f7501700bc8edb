"""Writing a folder atomically: into a staging folder beside the destination, then moved into
place, so a failed or interrupted write leaves nothing that looks complete.

A staging folder is `.<name>.partial-<pid>` and holds a marker file naming its process; staging
folders whose process is gone (an interrupted compile) are removed by the next write into the
same parent. Nothing without the marker is ever removed.
"""

import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from tyllm.artifacts.manifest import CHECKPOINT_FORMAT, STAGING_MARKER, written_by_tyllm
from tyllm.errors import TyllmError


def print_note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_atomically(dest: Path, write: Callable[[Path], None],
                     check_destination: Callable[[Path], None],
                     note: Callable[[str], None] = print_note) -> Path:
    """`check_destination(dest)` refuses a destination that must not be replaced; then
    `write(staging)` fills a fresh staging folder, which replaces `dest`."""
    dest = Path(os.path.abspath(dest))  # "." and "x/.." name their folder
    check_not_a_file(dest)
    check_destination(dest)
    make_parent(dest)
    remove_stale_staging(dest.parent, note)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / STAGING_MARKER).write_text(owner_tag())
    try:
        write(staging)
        check_not_a_file(dest)
        check_destination(dest)  # again: the destination may have changed while writing
        (staging / STAGING_MARKER).unlink()
        replace_folder(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def check_not_a_file(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise TyllmError(f"{dest} is an existing file, not a folder: choose a folder path for "
                         f"the output; tyllm will not overwrite the file.")


def make_parent(dest: Path) -> None:
    """Creates the destination's parent, and proves it writable, before any work."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        probe = dest.parent / f".{dest.name}.probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise TyllmError(f"Cannot write into {dest.parent} ({e.strerror or e}): choose an output "
                         f"folder in a writable location.") from e


def owner_tag() -> str:
    """This process on this host: a folder shared with other hosts or containers (NFS, Docker
    volumes) holds their staging folders too, whose pids mean nothing here."""
    return f"{os.getpid()}@{socket.gethostname()}"


def staging_owner(folder: Path) -> int | None:
    """The process of this host that made a staging folder; None if `folder` is no tyllm
    staging folder or was made on another host."""
    try:
        pid, _, host = (folder / STAGING_MARKER).read_text().partition("@")
        return int(pid) if host == socket.gethostname() else None
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path, note: Callable[[str], None]) -> None:
    for folder in parent.glob(".*.partial-*"):
        pid = staging_owner(folder) if folder.is_dir() else None
        if pid is not None and not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            note(f"removed {folder}: the staging folder of an interrupted tyllm run "
                 f"(process {pid} is gone)")


def replace_folder(new: Path, dest: Path) -> None:
    """Moves `new` to `dest`; whatever was there is moved aside first and deleted last."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def check_checkpoint_destination(out: Path) -> None:
    """A checkpoint tyllm writes may replace only a new or empty folder or one it wrote."""
    if out.is_dir() and any(out.iterdir()) and not written_by_tyllm(out, CHECKPOINT_FORMAT):
        raise TyllmError(f"{out} exists, is not empty and was not written by tyllm (no tyllm "
                         f"checkpoint manifest listing exactly its files): choose a new folder or "
                         f"empty it yourself; tyllm will not overwrite files it did not write.")
