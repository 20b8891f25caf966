"""Analyses of trained deltas and the `interp` command line."""
