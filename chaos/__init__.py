"""Faults (kill, pause, partition, latency) and the history checker that proves nothing was lost."""
