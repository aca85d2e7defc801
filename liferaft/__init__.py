"""The `liferaft` command's own modules (the operator's tools); the broker process imports none."""
