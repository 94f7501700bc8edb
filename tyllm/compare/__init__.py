"""`tyllm compare`: where a compiled tree departs from HF transformers.

Two checks on one prompt (`compare(tree, model, ...)`, tyllm/compare/run.py):
1. Per layer, per die (`taps.py`, `reference.py`): a tapped variant of each die's step program
   (the same step module and lowering as the tree's, every tap point an extra output) runs the
   prompt on the tree's own parameters; its values are compared with HF's at the same points
   (`points.py`) by cosine, SQNR and max |error| against per-dtype thresholds
   (`thresholds.py`).
2. Whole generation, teacher forced (`logits.py`): the tree's own graphs fed HF's tokens, one
   position at a time; top-1 agreement, top-k tolerances, the first divergence.
`report.py` prints the table, writes the JSON and the plot.
"""

from tyllm.compare.run import compare

__all__ = ["compare"]
