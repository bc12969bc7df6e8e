"""pyloader's version (one place: the package, the metadata every output carries)."""

__version__ = "0.1.0"
