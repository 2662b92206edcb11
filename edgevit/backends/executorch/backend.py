"""ExecuTorch (XNNPACK delegate): the backend class. What each method needs is imported when it runs
(``lowering``, ``runtime``, ``profiling``, ``cost``), so registering the backend loads no runtime."""
from __future__ import annotations

from pathlib import Path

from ..base import Backend, DeviceRun, LoweredArtifact, ParsedProfile, StageProgress, register_backend
from . import profiling

__all__ = ["ExecuTorchBackend"]


@register_backend
class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "fp16", "int8")
    takes_recipe = True
    runtime_packages = ("executorch",)
    wire_format = 1  # docs/serial-protocol.md: ArtifactFormat.PTE
    native_runner = profiling.EXECUTOR_RUNNER

    def lower(self, model, example, precision: str, calibration, progress: StageProgress,
              recipe=None) -> LoweredArtifact:
        from .lowering import lower_to_pte

        return lower_to_pte(model, example, precision, calibration, progress, recipe, self.suffix)

    def quantizer(self, recipe=None):
        """The PT2E quantizer ``lower`` uses for int8 (sensitivity analysis reuses it)."""
        from .quantizer import xnnpack_int8_quantizer

        return xnnpack_int8_quantizer(recipe)

    def load(self, artifact: bytes | Path, threads: int = 1):
        from .runtime import load_program

        return load_program(artifact, threads)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version
        return {"executorch": version("executorch"), "torchao": version("torchao")}

    def profile_here(self, artifact: Path, *, runs: int, warmup: int, threads: int,
                     timeout: float = 900.0) -> DeviceRun:
        return profiling.profile_here(artifact, runs=runs, warmup=warmup, threads=threads, timeout=timeout)

    def parse_profile(self, run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
        return profiling.parse_profile(run, artifact, warmup)

    def cost_replay(self):
        from .cost import XnnpackCostReplay

        return XnnpackCostReplay(self)
