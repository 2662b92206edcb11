"""Runtimes edgevit lowers to. Each backend is one folder here that implements ``base.Backend``.

Every sub-package is imported on first use of this package, which registers its backend by name: adding
a runtime is adding a folder (``backend.py`` with a ``@register_backend`` class; see README "Adding a
backend"). Modules named in ``$EDGEVIT_BACKENDS`` are imported too (plugins, tests).
"""
import importlib
import pkgutil

from .base import (
    Backend,
    DeviceRun,
    LoweredArtifact,
    NativeRunner,
    OpSummary,
    ParsedProfile,
    StageProgress,
    get_backend,
    list_backends,
    register_backend,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.ispkg:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Backend", "DeviceRun", "LoweredArtifact", "NativeRunner", "OpSummary", "ParsedProfile",
           "StageProgress", "get_backend", "list_backends", "register_backend"]
