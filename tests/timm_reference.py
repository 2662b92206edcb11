"""Import the real timm 1.0.31 as a numerical reference, for tests only.

timm imports torchvision at module load, and torchvision has no CPU build here. None of the timm code
paths our tests call use torchvision, so a meta-path finder hands out inert stand-in modules for any
``torchvision.*`` import. timm itself is installed with ``pip install --no-deps timm==1.0.31`` (.ci/run).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from unittest import mock

TIMM_VERSION = "1.0.31"


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__ = [], spec
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """Return the timm module, or None when timm (the pinned version) is not installed."""
    try:
        import torchvision  # noqa: F401  (a real one, if some day there is a CPU build)
    except ImportError:
        if not any(isinstance(f, _TorchvisionStandIn) for f in sys.meta_path):
            sys.meta_path.insert(0, _TorchvisionStandIn())
    try:
        import timm
    except ImportError:
        return None
    return timm if timm.__version__ == TIMM_VERSION else None
