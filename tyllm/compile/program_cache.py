"""Compiled programs kept across compiles (`$TYLLM_CACHE/programs`, default
~/.cache/tyllm/programs).

Weights are graph inputs, so a die's program depends on the model's config, the die's shapes,
the graph length, KV size, dtype, target and the code that builds and lowers it, never on the
weight values. Each program is stored under a fingerprint of all of these: a compile killed at
any point and run again compiles only the programs it had not finished, and a second tree of the
same model (other seq lens, other dies of the same shape) reuses the ones it shares.

An entry is a folder written beside its place and renamed, never rewritten: the library (named
with the backend's suffix, `library.so`, `library.onnx`), `io.json`, and `digests.json` with the
size and sha256 of each. An ONNX twin comes in a `twin/` folder of its own (same digests), so an
entry made without one gains one later by one more rename. Every digest is checked before a file
is handed out: an entry that fails (a truncated library, bit rot, an entry of an older tyllm) is
removed with a warning in the compile log and is a miss. A cache that cannot be read or written
never fails a compile, and says why in the log.
"""

import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from tyllm.artifacts.manifest import sha256_file, tool_versions
from tyllm.cache import cache_root

FORMAT = 2
LIBRARY, TWIN, IO, DIGESTS, TWIN_FOLDER = "library", "twin.onnx", "io.json", "digests.json", "twin"
CODE = ("tyllm", "tyllm.backends")  # all of it: graphs trace code from models, quant, shard,
# capture
VOLATILE_CONFIG = ("_name_or_path", "_commit_hash", "transformers_version", "name_or_path")
log = logging.getLogger(__name__)


class DamagedEntry(Exception):
    """A stored entry whose files do not match its digests; the message says how."""


def programs_root() -> Path:
    return cache_root() / "programs"


@cache
def code_digest() -> str:
    """sha256 of the source that determines a program (a changed schedule is a new program)."""
    digest = hashlib.sha256()
    for package in CODE:
        folder = Path(importlib.import_module(package).__file__).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(folder).as_posix()}".encode()
                          + path.read_bytes())
    return digest.hexdigest()


def fingerprint(hf_config: dict, facts: dict) -> str:
    config = {k: v for k, v in hf_config.items() if k not in VOLATILE_CONFIG}
    document = {"format": FORMAT, "config": config, "facts": facts, "tools": tool_versions(),
                "code": code_digest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def read_digests(folder: Path) -> dict[str, dict]:
    """name -> {"sha256", "size"} of the files `folder` holds, from its digests.json."""
    try:
        listed = json.loads((folder / DIGESTS).read_text())["files"]
        if all(isinstance(e["sha256"], str) and isinstance(e["size"], int)
               for e in listed.values()):
            return listed
    except FileNotFoundError:
        raise DamagedEntry(f"it has no {DIGESTS}: written by an older tyllm") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    raise DamagedEntry(f"its {DIGESTS} is not one tyllm wrote")


def checked_files(folder: Path) -> dict[str, Path]:
    """name -> path of the files `folder` holds, each checked against its size and sha256."""
    files = {}
    for name, digest in read_digests(folder).items():
        path = folder / name
        if not path.is_file():
            raise DamagedEntry(f"{name} is missing")
        if path.stat().st_size != digest["size"] or sha256_file(path) != digest["sha256"]:
            raise DamagedEntry(f"{name} does not match its sha256: damaged or truncated")
        files[name] = path
    return files


def checked_entry(folder: Path, need_twin: bool) -> tuple[Path, Path | None, dict]:
    """(library, twin or None, io) of an entry, every file handed out checked first."""
    files = checked_files(folder)
    library = next((p for n, p in files.items() if Path(n).stem == LIBRARY), None)
    if library is None or IO not in files:
        raise DamagedEntry(f"its {DIGESTS} lists no library or no {IO}")
    try:
        io = json.loads(files[IO].read_text())
    except ValueError:
        raise DamagedEntry(f"its {IO} is not JSON") from None
    twins = folder / TWIN_FOLDER
    if not (need_twin and twins.is_dir()):
        return library, None, io
    twin = checked_files(twins).get(TWIN)
    if twin is None:
        raise DamagedEntry(f"its {TWIN_FOLDER}/{DIGESTS} lists no {TWIN}")
    return library, twin, io


def files(key: str, need_twin: bool) -> tuple[Path, Path | None, dict] | None:
    """(library, ONNX twin, io) of a stored program, its files checked against their digests;
    None if absent, without a needed ONNX twin, damaged (then removed) or unreadable."""
    try:
        folder = programs_root() / key
        if not folder.is_dir():
            return None
        library, twin, io = checked_entry(folder, need_twin)
    except DamagedEntry as e:
        discard(folder, str(e))
        return None
    except (OSError, RuntimeError) as e:
        log.warning(f"tyllm: cannot read the program cache entry {key} ({e}): its program is "
                    f"compiled without the cache.")
        return None
    return None if need_twin and twin is None else (library, twin, io)


def discard(folder: Path, reason: str) -> None:
    """Removes an entry that failed its checks: first moved aside (readers see it whole or
    not at all)."""
    log.warning(f"tyllm: removed the program cache entry {folder} ({reason}); its program "
                f"is compiled again.")
    try:
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.damaged-", dir=folder.parent))
        os.rename(folder, trash / folder.name)
    except FileNotFoundError:  # another compile removed it first
        return
    except OSError as e:
        log.warning(f"tyllm: could not remove the damaged program cache entry {folder} ({e}); "
                    f"remove it yourself or run `tyllm cache --clear`.")
        return
    remove_hidden(trash)


def remove_hidden(folder: Path) -> None:
    """Removes a staging or removed entry's hidden folder (no lookup ever reads one)."""
    try:
        shutil.rmtree(folder)
    except OSError as e:
        log.warning(f"tyllm: could not remove {folder} from the program cache ({e}); remove it "
                    f"yourself or run `tyllm cache --clear`.")


def write_entry(staging: Path, sources: dict[str, Path | bytes]) -> None:
    """A fresh `staging` folder holding `sources` (name -> file to copy, or bytes) and the
    digests.json of the copies."""
    staging.mkdir()
    for name, source in sources.items():
        if isinstance(source, bytes):
            (staging / name).write_bytes(source)
        else:
            shutil.copyfile(source, staging / name)
    digests = {name: {"sha256": sha256_file(staging / name),
                      "size": (staging / name).stat().st_size} for name in sources}
    (staging / DIGESTS).write_text(json.dumps({"format": FORMAT, "files": digests}))


def publish(folder: Path, sources: dict[str, Path | bytes], twin: Path | None = None) -> None:
    """Writes `sources` (and a `twin/` folder holding `twin`) beside `folder`, then renames it
    into place; if another compile published the same program first, keeps theirs (a
    published entry is never replaced)."""
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        staging = temp / folder.name
        write_entry(staging, sources)
        if twin is not None:
            write_entry(staging / TWIN_FOLDER, {TWIN: twin})
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        remove_hidden(temp)


def store(key: str, library: Path, twin: Path | None, io: dict) -> None:
    """Keeps a freshly compiled program, written beside its place and renamed, so a reader sees
    a whole entry or none. A published entry is never rewritten (another compile may be
    reading it); one without an ONNX twin gains a `twin/` folder the same way. A cache that
    cannot be written is skipped with a warning in the compile log: the compile goes on."""
    try:
        folder = programs_root() / key
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            publish(folder, {LIBRARY + library.suffix: library, IO: json.dumps(io).encode()},
                    twin)
        elif twin is not None and not (folder / TWIN_FOLDER).is_dir():
            publish(folder / TWIN_FOLDER, {TWIN: twin})
    except (OSError, RuntimeError) as e:
        log.warning(f"tyllm: could not keep the program {key} in the program cache ({e}): the "
                    f"compile goes on without it.")


def stored_entries() -> list[Path]:
    """The published entries (staging and removed ones are hidden: their names start with .)."""
    root = programs_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def damaged_entries() -> list[str]:
    """"<key> (<reason>)" of every stored entry that fails its digests (`tyllm doctor`); none is
    removed here: the next compile that needs one replaces it. Entries of an older tyllm (no
    digests) are not damaged, only stale: no compile of this tyllm looks them up."""
    damaged = []
    for folder in stored_entries():
        if not (folder / DIGESTS).is_file():
            continue
        try:
            checked_entry(folder, need_twin=True)
        except DamagedEntry as e:
            damaged.append(f"{folder.name} ({e})")
    return damaged


def usage() -> tuple[Path, int, int]:
    """(location, programs stored, bytes)."""
    root, entries = programs_root(), stored_entries()
    size = 0
    for entry in entries:
        for f in entry.rglob("*"):
            try:
                size += f.stat().st_size if f.is_file() else 0
            except OSError:  # removed meanwhile
                pass
    return root, len(entries), size


def clear() -> int:
    """Removes every stored program; returns the bytes freed."""
    _, _, size = usage()
    shutil.rmtree(programs_root(), ignore_errors=True)
    return size
