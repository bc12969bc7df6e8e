"""atheris: load_pickle (the native opcode machine) against load_pickle_reference (the Python interpreter).

On every input both must give the same value and end position, or fail with the same error class
(FormatError / UnsafePickleError); the native path may additionally refuse values nested deeper than its limit.
Nothing but FormatError may escape the native path. Run: python fuzz/atheris_pickle.py fuzz/corpus/pickle
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports():
    from differential import check


def test_one_input(data: bytes):
    check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
