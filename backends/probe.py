"""The probe behind each backend's `check` (`tyllm doctor`): y = x + 1 on x = 0..7, compiled
and run the backend's way."""

from collections.abc import Callable

import numpy as np

PROBE_INPUT = np.arange(8, dtype="float32")


def probe_findings(run: Callable[[np.ndarray], np.ndarray], works: str, wrong: str,
                   cannot: str) -> list[tuple[bool, str]]:
    """`run(x)` -> y, judged: (True, `works`), or (False, `wrong`) when y is not x + 1, or
    (False, `cannot` with the error put in for {}) when it raises."""
    try:
        out = run(PROBE_INPUT)
    except Exception as e:
        return [(False, cannot.format(e))]
    if not np.allclose(out, PROBE_INPUT + 1):
        return [(False, wrong)]
    return [(True, works)]
