"""The `liferaft` command and its tooling: the CLI, the local launcher, the demo, the bench and
the certificate maker (certs.py). The broker process imports none of it but liferaft.cli.node."""
