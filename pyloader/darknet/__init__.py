"""Darknet `.cfg` + `.weights`: the cfg parser (cfg.py), the weights reader (weights.py, numpy only) and the
Keras model builder (model.py)."""
