"""The transports of a generation's stream: each parses its request, iterates `Follow` and encodes."""
