"""The ``hls`` backend's registration: FPGA device profiles name it in ``compile.backends``.

An FPGA artifact is a project folder, not one runtime file, so ``edgevit compile`` for a device of kind
``fpga`` goes through :mod:`edgevit.compile.fpga`, which drives this package's converter, writer and
C-simulation; ``lower``/``load`` here say so instead of pretending to be a CPU runtime.
"""
from __future__ import annotations

from ...errors import EdgevitError
from ..base import Backend, register_backend


@register_backend
class HlsBackend(Backend):
    name = "hls"
    suffix = ".bin"              # the weight image; the rest of the project sits beside it
    wire_format = 3              # docs/serial-protocol.md: ArtifactFormat.HLS (the host agent's C-simulated PL)
    precisions = ("fixed",)      # ap_fixed formats per tensor class, recorded in the manifest

    def lower(self, model, example, precision, calibration, progress, recipe=None):
        raise EdgevitError("The hls backend builds an HLS project folder; run `edgevit compile MODEL --device "
                           "<fpga board>` (edgevit.compile.fpga), not the CPU lowering pipeline.")

    def load(self, artifact, threads: int = 1):
        raise EdgevitError("An HLS project runs in C-simulation (edgevit.backends.hls.csim), not in a CPU "
                           "runtime; `edgevit compile` runs it as its verify step.")

    def parse_profile(self, run, artifact, warmup: int):
        """Per-layer cycles from the C agent's hls runner (edgevit.backends.hls.agent_run)."""
        from .agent_run import parse_agent_profile
        return parse_agent_profile(run)

    def available(self) -> bool:
        """No Python runtime runs a weight image: the serial C agent does (firmware/agent, runner hls_csim)."""
        return False

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        from .toolchain import gxx_version
        return {"hls4ml (ap_types)": version("hls4ml"), "g++": gxx_version()}
