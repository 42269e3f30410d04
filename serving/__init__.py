"""Serving pods: the predict and feedback API, live model swaps, canary and shadow traffic."""
