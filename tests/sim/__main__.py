"""Command line: python -m tests.sim --help"""

from __future__ import annotations

import sys

from tests.sim.cli import main

sys.exit(main())
