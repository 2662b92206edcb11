"""``--via local``: run the artifact on this machine, in a fresh process so peak memory is this model's.

The backend decides how (``Backend.profile_here``): ExecuTorch runs ``python -m
edgevit.backends.executorch.runner`` with ``executor_runner``'s flags (the same command line a phone or
board gets), LiteRT ``python -m edgevit.backends.litert.op_timing``.
"""
from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

from ...backends import Backend
from ...devices import host_facts
from . import DeviceRun, Target, register_target

__all__ = ["LocalTarget"]


@register_target
class LocalTarget(Target):
    """This machine. It reports no device identity: a local profile of a phone's artifact is allowed."""

    name = "local"

    def __init__(self, timeout: float = 900.0):
        self.timeout = timeout

    def run(self, artifact: Path, backend: Backend, *, runs: int, warmup: int, threads: int,
            progress) -> DeviceRun:
        artifact = Path(artifact)
        with progress.stage(f"running {artifact.name} here ({warmup} warm-up + {runs} timed, {threads} thread(s))"):
            run = backend.profile_here(artifact, runs=runs, warmup=warmup, threads=threads, timeout=self.timeout)
        return replace(run, device_info={**self.info(threads), **run.device_info})

    @staticmethod
    def info(threads: int) -> dict:
        return {**host_facts(), "threads": threads, "os": f"{platform.system()} {platform.release()}"}

    def describe(self) -> dict:
        return {"via": self.name, "host": platform.node(), "machine": platform.machine()}
