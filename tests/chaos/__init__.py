"""Tests of the chaos building blocks: the fault proxy and the history checker."""
