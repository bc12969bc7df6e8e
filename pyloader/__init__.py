"""pyloader: YOLO checkpoints (Darknet .cfg + .weights; YOLOv5 and Ultralytics .pt) to Keras models."""

from .version import __version__

from .errors import FormatError, UnsafePickleError
from .api import load, read
from .bulk import Result, convert
from . import keras_registration as _keras_registration

__all__ = ["load", "read", "convert", "FormatError", "UnsafePickleError"]

_keras_registration.install()  # pyloader's Keras classes, registered when (or if) Keras is imported
