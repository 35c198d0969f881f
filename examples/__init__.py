"""Runnable examples of the bridge library."""
