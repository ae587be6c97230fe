"""Durable Streams (https://github.com/durable-streams/durable-streams): generations as streams, and a general stream server."""
