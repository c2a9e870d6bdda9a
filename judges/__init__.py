"""Judges: score stored outputs (groundedness, citations, business intent, pairwise preference).

Importing this package registers the built-in judges.
"""

from . import checks  # noqa: F401  (registers "checks")
from .base import Judge, Subject, create, register, registered

__all__ = ["Judge", "Subject", "create", "register", "registered"]
