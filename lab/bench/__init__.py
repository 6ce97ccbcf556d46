"""Benchmarks (scripts, not tests): speed against the reference pipeline, sampler quality."""
