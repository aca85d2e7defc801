"""`python -m liferaft ...` is the `liferaft` command (used where the console script is not on PATH)."""

from liferaft.cli import main

main()
