"""Helpers shared by the demo workloads."""
