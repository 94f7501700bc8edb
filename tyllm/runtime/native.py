"""The native all-reduce (csrc/all_reduce.cc): built once per source and tvm_ffi version with
the machine's C++ compiler, cached under ~/.cache/tyllm/native, loaded with ctypes.

Without a compiler the runtime keeps the Python all-reduce (`native_library()` is None and says
why once in the log).
"""

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tvm_ffi

SOURCE = Path(__file__).parent / "csrc" / "all_reduce.cc"
log = logging.getLogger(__name__)


def _ffi_paths() -> tuple[Path, Path]:
    root = Path(tvm_ffi.__file__).parent
    return root / "include", root / "lib"


def _compiler() -> list[str]:
    command = shlex.split(os.environ.get("CXX", "g++"))
    if not command or shutil.which(command[0]) is None:
        raise OSError("no C++ compiler (g++ or $CXX) on PATH")
    return command


def _library_path(compiler: list[str]) -> Path:
    """One cached library per source, compiler, tvm_ffi build and platform."""
    key = [SOURCE.read_text(), " ".join(compiler), tvm_ffi.__version__, str(_ffi_paths()[1]),
           sys.platform, platform.machine()]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("TYLLM_CACHE") or Path.home() / ".cache" / "tyllm")
    return cache / "native" / f"all_reduce-{digest}.so"


def _build(compiler: list[str], out: Path) -> None:
    include, lib = _ffi_paths()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        subprocess.run([*compiler, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{include}",
                        str(SOURCE), f"-L{lib}", "-ltvm_ffi", f"-Wl,-rpath,{lib}",
                        "-o", str(staged)], check=True, capture_output=True, text=True)
        os.replace(staged, out)  # concurrent builders each move a complete file


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.tyllm_group_bytes.restype = ctypes.c_int64
    lib.tyllm_group_bytes.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.tyllm_group_init.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64]
    lib.tyllm_group_abort.argtypes = [ctypes.c_void_p]
    lib.tyllm_bind.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.tyllm_register.argtypes = [ctypes.c_char_p]
    return lib


@functools.cache
def native_library() -> ctypes.CDLL | None:
    try:
        compiler = _compiler()
        path = _library_path(compiler)
        if not path.is_file():
            _build(compiler, path)
        return _declare(ctypes.CDLL(str(path)))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        log.warning("tyllm: native all-reduce unavailable (%s); using the Python one",
                    detail.strip()[-500:])
        return None
