"""`python -m node ...` is the `liferaft` command (used where the console script is not on PATH)."""

from node.cli import main

main()
