"""Judges: score stored outputs (groundedness, citations, business intent, pairwise preference)."""
