"""The deterministic simulation that checks the Raft core (raft/) is safe.

`python -m tests.sim --seeds 2000` runs 2000 seeded worlds; `--seed S -v` replays one with a
trace; `--demo` tells one five-node run as it happens; `--bench` measures speed.

  world.py      one seeded world, its tick loop, the calm phase and its liveness bounds
  profile.py    the shape of a world: fixed by the command line, or drawn from the seed
  host.py       one node: RawNode, MemoryStorage as its disk, state machine, the host loop
  network.py    delay, loss, duplication, reordering, cuts, ignored message types
  nemesis.py    the faults, random and aimed at the moments Raft is delicate
  actors.py     clients and the operator (proposals, transfers, membership changes)
  checker.py    the safety properties, checked incrementally after every step
  runner.py     running seeds, on several cores, and summing them up
  regressions.py  every seed that ever failed
"""
