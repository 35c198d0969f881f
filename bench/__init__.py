"""Benchmarks for bridge: every approach measured side by side in one run.

Run ``make bench`` (or ``python -m bench``); ``make bench-smoke`` runs every
case with tiny sizes so the code cannot rot. See ``bench/README.md``.
"""
