"""The shadow proxy: forward production traffic untouched, mirror it to candidates, store every exchange."""

__version__ = "0.1.0"
