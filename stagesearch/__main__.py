"""`python -m stagesearch`: the same as the `stagesearch` command."""

from __future__ import annotations

import sys

from stagesearch.cli import main

if __name__ == "__main__":
    sys.exit(main())
