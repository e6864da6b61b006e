"""Benchmarks and the CPU learning check: scripts run from the repository, not part of the
installed package. Tests import helpers from here with the repository root on sys.path."""
