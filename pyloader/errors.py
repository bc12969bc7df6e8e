"""The one error family that crosses pyloader's boundary."""

__all__ = ["FormatError", "UnsafePickleError"]


class FormatError(ValueError):
    """A checkpoint or cfg that pyloader cannot read exactly as its framework would.

    The message names the file, the layer or entry, and what was expected against what was found.
    """


class UnsafePickleError(FormatError):
    """A pickle asks for something a checkpoint never needs (a call, an import outside the allow-list)."""
