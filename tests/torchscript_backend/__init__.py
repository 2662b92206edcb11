"""A backend that lives outside edgevit: proof that adding a runtime is one folder (README "Adding a backend").

Loaded by naming it in ``$EDGEVIT_BACKENDS`` (``torchscript_backend``, with ``tests/`` on the Python path);
``tests/test_backend_contract.py`` drives ``compile``, ``bench``, ``profile --via local`` and ``estimate``
through it without any change elsewhere.
"""
from .backend import TorchScriptBackend

__all__ = ["TorchScriptBackend"]
