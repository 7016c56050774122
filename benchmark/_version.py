"""The tool's version, written into every result file (a leaf: imports nothing)."""

__version__ = "0.1.0"
