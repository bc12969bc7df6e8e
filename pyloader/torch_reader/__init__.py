"""The safe PyTorch checkpoint reader shared by the .pt families: the zip/legacy container (checkpoint.py) and a
pickle interpreter that imports and calls nothing (unpickle.py). Imports neither torch nor Keras."""
