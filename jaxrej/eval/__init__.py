"""Evaluation protocols (library code behind the evaluating commands): `heads`."""
