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
