"""Benchmarks are run explicitly: ``pytest benchmarks --benchmark-enable`` (they are not part of ``tests``)."""
