"""`python -m bench` is the same as the `wattbench` console script."""

import sys

from bench.cli import main

sys.exit(main())
