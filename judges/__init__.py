"""Judges: score stored outputs (groundedness, citations, business intent, pairwise preference).

Importing this package registers the built-in judges.
"""

from . import (
    checks,  # noqa: F401  (registers "checks")
    citations,  # noqa: F401  (registers "citations")
    grounded,  # noqa: F401  (registers "grounded")
    intent,  # noqa: F401  (registers "intent")
    llm_grounded,  # noqa: F401  (registers "grounded-llm", "citations-llm")
    pairwise,  # noqa: F401  (registers "pairwise")
    preference,  # noqa: F401  (registers "offline-preference")
)
from .base import Judge, Subject, create, register, registered

__all__ = ["Judge", "Subject", "create", "register", "registered"]
