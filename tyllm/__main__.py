"""`python -m tyllm ...` is the `tyllm` command (what torchrun's `-m tyllm` starts on each rank)."""

import sys

from tyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
