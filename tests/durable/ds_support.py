"""Helpers for the Durable Streams tests."""

DS = "/ds/v1/stream"
