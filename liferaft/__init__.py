"""The `liferaft` command and its tooling: the CLI, the local launcher, the demo and the bench."""
