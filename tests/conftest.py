import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Under pytest-xdist each worker is one process per core: one intra-op thread each, not two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

from timm_reference import import_timm  # noqa: E402


@pytest.fixture(scope="session")
def timm():
    module = import_timm()
    if module is None:
        if os.environ.get("CI"):
            pytest.fail("timm==1.0.31 is required in CI (pip install --no-deps timm==1.0.31)")
        pytest.skip("timm==1.0.31 not installed")
    return module


# --- test tiers (the markers are registered in pyproject.toml) ----------------------------------------------
#
# Every test carries exactly one tier, plus `slow` when it takes more than ~17-20 s on the 2-core CI machine, idle
# (measured with -n 2 --durations; a module fixture that costs that much makes every test that needs it slow):
#   unit         pure Python: no export, lowering or runtime; the whole tier runs in seconds (`-m unit`)
#   integration  compiles, exports, lowers, or runs artifacts in the real runtimes
#   emulated     drives an emulated far end: the adb phone (tests/emulators/adbd.py), the serial agent on ptys
# Each file sets its tier with a module-level `pytestmark`, or per test where a file mixes tiers.
TIERS = ("unit", "integration", "emulated")


@pytest.fixture(autouse=True)
def _unit_tests_run_on_one_thread(request):
    """Unit tests run small tensors: a second intra-op thread gains nothing there, and on a shared machine it made
    `-m unit` (one process, two threads) ~10x slower (every op waits until both threads are scheduled).
    Every test gets the worker's thread count back afterwards: torch's is process-wide, and a test that sets
    its own (a bench at 2 threads) would otherwise leave the rest of that worker's tests competing with the
    other worker for both cores."""
    before = torch.get_num_threads()
    if request.node.get_closest_marker("unit") is not None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_runtest_setup(item):
    tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
    if len(tiers) != 1:
        pytest.fail(f"{item.nodeid} must carry exactly one tier marker of {', '.join(TIERS)}; it has "
                    f"{', '.join(tiers) or 'none'} (set `pytestmark` in its file, or mark the test)", pytrace=False)
