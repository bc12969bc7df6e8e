import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

# yolov5 imports torchvision -> torch._dynamo -> triton (a GPU compiler); importing triton after TensorFlow
# crashes the process (SIGSEGV) with torch 2.14 and TF 2.21, and test modules import TF first. The tests run
# on the CPU: hide triton so torch takes its no-triton path, whatever the import order.
sys.modules.setdefault("triton", None)

ROOT = Path(__file__).resolve().parent.parent
SHARED_CFG = ROOT.parent / "shared" / "cfg"
FULL = os.environ.get("PYLOADER_FULL") == "1"


def close(got, want, what: str, rtol: float) -> float:
    """max |got - want| / max |want| of two arrays of one shape, asserted <= rtol (the message names `what`)."""
    import numpy as np

    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= rtol, f"{what}: relative error {err:.3g}"
    return err


def require(module: str):
    """`module` imported: a skip where it is missing, a failure under CI=true (the test extra installs it)."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def shared_cfgs():
    """The official darknet cfgs in ../shared/cfg. Missing under CI=true is a failure, not a skip."""
    if not SHARED_CFG.is_dir():
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{SHARED_CFG} is missing: CI must run with ../shared beside the checkout")
        return []
    return sorted(SHARED_CFG.glob("*.cfg"))


@pytest.fixture(scope="session")
def cfg_dir():
    if not SHARED_CFG.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_CFG} is missing under CI=true")
        pytest.skip(f"{SHARED_CFG} not found")
    return SHARED_CFG


@pytest.fixture(scope="module", autouse=True)
def _module_temp_folders(request, tmp_path_factory):
    """pytest removes a passed test's tmp_path at once, but the folders of tmp_path_factory.mktemp (module and
    session fixtures: checkpoints, conversions) only when the session ends: those a module made go when it ends,
    unless one of its tests failed, so the suite's disk peak is one module's files instead of the sum (the biggest,
    tests/test_task_outputs.py, writes ~0.7 GB). Fixtures are defined per module: no later module uses them."""
    base = tmp_path_factory.getbasetemp()
    before, failed = set(os.listdir(base)), request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for name in set(os.listdir(base)) - before:
            shutil.rmtree(base / name, ignore_errors=True)
