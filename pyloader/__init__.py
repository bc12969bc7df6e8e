"""pyloader: YOLO checkpoints (Darknet .cfg + .weights; YOLOv5 and Ultralytics .pt) to Keras models."""

from .errors import FormatError, UnsafePickleError
from .api import load, read
from .bulk_convert import Result, convert

__all__ = ["load", "read", "convert", "FormatError", "UnsafePickleError"]
__version__ = "0.1.0"
