"""Command line: python -m tests.brokersim --help"""

from __future__ import annotations

import sys

from tests.brokersim.cli import main

sys.exit(main())
