"""`tyllm.die_all_reduce`, the packed function this backend's graphs call (tyllm/capture/ops.py):
a thin TVM wrapper (csrc/die_all_reduce.cc, built against tvm_ffi) over the runtime's plain C
all-reduce (tyllm/runtime/csrc/all_reduce.cc), on the group member the die worker bound to its
thread. Threads bound to a Python group reduce through `tyllm.runtime.collective.all_reduce`,
wrapped as a Python packed function; so does everything when a library cannot be built here.
"""

import ctypes
import functools
from pathlib import Path

import torch
import tvm
import tvm_ffi

from tyllm.capture.ops import ALL_REDUCE_PACKED_FUNC
from tyllm.runtime import collective
from tyllm.runtime.native import entry_point, load_native, native_library

SOURCE = Path(__file__).parent / "csrc" / "die_all_reduce.cc"
PYTHON_PACKED_FUNC = "tyllm.die_all_reduce_python"  # the native wrapper defers to it


def _python_all_reduce(x, out) -> None:
    torch.from_dlpack(out).copy_(collective.all_reduce(torch.from_dlpack(x)))


def _ffi_flags() -> list[str]:
    root = Path(tvm_ffi.__file__).parent
    lib = root / "lib"
    return [f"-I{root / 'include'}", f"-L{lib}", "-ltvm_ffi", f"-Wl,-rpath,{lib}"]


@functools.cache
def _wrapper() -> ctypes.CDLL | None:
    lib = load_native(SOURCE, _ffi_flags(), f"native {ALL_REDUCE_PACKED_FUNC}",
                      "graphs reduce through Python", key=(tvm_ffi.__version__,))
    if lib is not None:
        lib.tyllm_register_die_all_reduce.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                                      ctypes.c_void_p, ctypes.c_void_p]
    return lib


@functools.cache
def register_all_reduce() -> None:
    """Registers `tyllm.die_all_reduce` once per process, before a program calling it loads:
    the native wrapper when the runtime's library and the wrapper build here, else the Python
    function alone."""
    tvm.register_global_func(PYTHON_PACKED_FUNC, _python_all_reduce, override=True)
    runtime = native_library()
    wrapper = runtime and _wrapper()
    if not wrapper:
        tvm.register_global_func(ALL_REDUCE_PACKED_FUNC, _python_all_reduce, override=True)
        return
    reduce, text = (entry_point(runtime, n) for n in ("tyllm_all_reduce", "tyllm_status_text"))
    if wrapper.tyllm_register_die_all_reduce(ALL_REDUCE_PACKED_FUNC.encode(),
                                             PYTHON_PACKED_FUNC.encode(), reduce, text) != 0:
        raise RuntimeError(f"Registering the native {ALL_REDUCE_PACKED_FUNC} failed: delete "
                           f"{SOURCE.stem}-*.so in the native folder of the tyllm cache "
                           f"(~/.cache/tyllm or $TYLLM_CACHE) and load the tree again.")
