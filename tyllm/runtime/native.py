"""Native libraries built at first use with the machine's C++ compiler, cached under
~/.cache/tyllm/native (one file per source, flags and compiler), loaded with ctypes: the
runtime's all-reduce (csrc/all_reduce.cc, plain C, no framework), and what a backend builds the
same way (`load_native`).

Without a compiler the runtime keeps the Python all-reduce (`native_library()` is None and says
why once in the log).
"""

import ctypes
import functools
import hashlib
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).parent / "csrc" / "all_reduce.cc"
log = logging.getLogger(__name__)


def _compiler() -> list[str]:
    command = shlex.split(os.environ.get("CXX", "g++"))
    if not command or shutil.which(command[0]) is None:
        raise OSError("no C++ compiler (g++ or $CXX) on PATH")
    return command


def _library_path(source: Path, compiler: list[str], flags: list[str]) -> Path:
    """One cached library per source, compiler, flags and platform."""
    key = [source.read_text(), " ".join(compiler), *flags, sys.platform, platform.machine()]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("TYLLM_CACHE") or Path.home() / ".cache" / "tyllm")
    return cache / "native" / f"{source.stem}-{digest}.so"


def _build(compiler: list[str], source: Path, flags: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        subprocess.run([*compiler, "-O2", "-std=c++17", "-shared", "-fPIC", str(source), *flags,
                        "-o", str(staged)], check=True, capture_output=True, text=True)
        os.replace(staged, out)  # concurrent builders each move a complete file


def load_native(source: Path, flags: list[str], what: str, instead: str,
                key: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """`source` built with `flags` (include and link options) and loaded; None when it cannot
    be, said in the log (`what` is unavailable, and what is used `instead`). The cached file
    is keyed by the source, the flags and `key` (versions of what it links against)."""
    try:
        compiler = _compiler()
        path = _library_path(source, compiler, [*flags, *key])
        if not path.is_file():
            _build(compiler, source, flags, path)
        return ctypes.CDLL(str(path))  # its calls release the interpreter lock
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        log.warning("tyllm: %s unavailable (%s); %s", what, detail.strip()[-500:], instead)
        return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.tyllm_group_bytes.restype = ctypes.c_int64
    lib.tyllm_group_bytes.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.tyllm_group_init.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64]
    lib.tyllm_group_abort.argtypes = [ctypes.c_void_p]
    lib.tyllm_bind.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.tyllm_all_reduce.restype = ctypes.c_int32
    lib.tyllm_all_reduce.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                     ctypes.c_int32, ctypes.c_int32]
    lib.tyllm_status_text.restype = ctypes.c_char_p
    lib.tyllm_status_text.argtypes = [ctypes.c_int32]
    return lib


def float16_flags() -> list[str]:
    """`-mf16c` where this x86 CPU converts float16 in hardware: without it GCC converts each
    element of a float16 all-reduce in a libgcc routine (18 % of a 4-die Qwen3-1.7B int4
    decode's CPU time, measured). Other machines convert _Float16 natively or in software."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return ["-mf16c"] if re.search(r"^flags\s*:.*\bf16c\b", cpuinfo, re.M) else []


@functools.cache
def native_library() -> ctypes.CDLL | None:
    lib = load_native(SOURCE, float16_flags(), "native all-reduce", "using the Python one")
    return lib and _declare(lib)


def entry_point(lib: ctypes.CDLL, name: str) -> int:
    """The address of C function `name` of `lib`, for native code that calls it directly."""
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
