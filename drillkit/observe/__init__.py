"""Observation: per-request records, series, stack watching, quality probing."""
