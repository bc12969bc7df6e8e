"""The safe unpickler of PyTorch checkpoints: it interprets the opcodes checkpoints use and runs nothing.

Python's `pickle` module calls whatever a pickle names (`os.system`, `builtins.eval`, any class's `__reduce__`
target). This reader never imports a module and never calls an object named by the pickle: classes become inert
records (records.py), only allow-listed pure functions are called (allowlist.py), each effect opcode is checked by
one policy (policy.py) and the work and memory per pickle byte are bounded (budget.py). Module paths are matched
by suffix, so `models.common.Conv` and `yolov5.models.common.Conv` read alike.

Two interpreters apply that policy: `load_pickle`, the native opcode machine (native.py, csrc/pickle_vm.cpp), and
`load_pickle_reference`, the plain-Python one it is tested and fuzzed against (reference.py).
"""

from .native import load_pickle
from .reference import load_pickle_reference

__all__ = ["load_pickle", "load_pickle_reference"]
