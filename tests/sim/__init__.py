"""The deterministic simulation that checks the Raft core's safety (see tests/sim/world.py).

`python -m tests.sim --seeds 2000` runs 2000 seeded worlds; `--seed S` replays one.
"""
