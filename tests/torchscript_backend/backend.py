"""TorchScript as a "runtime": ``torch.jit.trace`` lowers, ``torch.jit.load`` runs, ``torch.profiler`` profiles.

Deliberately trivial: it shows the whole contract (``edgevit.backends.base.Backend``) a real runtime
implements, in one file.
"""
from __future__ import annotations

import io
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from edgevit.backends import (
    Backend,
    DeviceRun,
    LoweredArtifact,
    OpSummary,
    ParsedProfile,
    StageProgress,
    register_backend,
)


def _load(artifact: bytes | Path) -> torch.jit.ScriptModule:
    data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else artifact
    return torch.jit.load(io.BytesIO(data)).eval()


@register_backend
class TorchScriptBackend(Backend):
    name = "torchscript"
    suffix = ".ts"
    precisions = ("fp32",)
    runtime_packages = ("torch",)

    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: StageProgress, recipe=None) -> LoweredArtifact:
        with progress.stage("torch.jit.trace"), torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model.eval(), example))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        ops = Counter(node.kind() for node in traced.graph.nodes() if node.kind().startswith("aten::"))
        return LoweredArtifact(data=buffer.getvalue(), suffix=self.suffix, ops=OpSummary(non_delegated=ops),
                               details={"runtime": "TorchScript (torch.jit)"})

    def load(self, artifact: bytes | Path, threads: int = 1):
        module = _load(artifact)
        torch.set_num_threads(threads)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)
        return run

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def profile_here(self, artifact: Path, *, runs: int, warmup: int, threads: int,
                     timeout: float = 900.0) -> DeviceRun:
        start = time.perf_counter()
        run = self.load(artifact, threads)
        load_ms = (time.perf_counter() - start) * 1e3
        x = torch.zeros(_input_shape(artifact))
        for _ in range(warmup):
            run(x)
        times, per_op = [], {}
        for _ in range(runs):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                run(x)
                times.append((time.perf_counter() - t0) * 1e3)
            for event in prof.key_averages():
                if event.key.startswith("aten::"):
                    per_op.setdefault(event.key, []).append(event.self_cpu_time_total / 1e3)
        rows = [{"name": k, "op_type": k, "median_ms": statistics.median(v)} for k, v in per_op.items()]
        return DeviceRun(op_profile=rows, times_ms=times, load_ms=load_ms)

    def parse_profile(self, run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
        rows = [{"name": r["name"], "op_type": r["op_type"], "delegate": None, "module": None,
                 "module_type": None, "ms": r["median_ms"]} for r in run.op_profile or []]
        return ParsedProfile(times_ms=run.times_ms, load_ms=run.load_ms, rows=rows,
                             extra={"timing_source": "wall clock around forward()",
                                    "op_timing": "torch.profiler self CPU time per aten op, median over runs",
                                    "module_mapping": "none", "init_ms": None, "delegate_calls": []})


def _input_shape(artifact: Path) -> list[int]:
    import json

    return json.loads((Path(artifact).parent / "manifest.json").read_text())["inputs"][0]["shape"]


@register_backend
class NoisyTorchScriptBackend(TorchScriptBackend):
    """A runtime with a numerical bug (its weights lose precision): its artifacts fail verification, which is
    what ``--backend auto`` must not settle for while another backend of the device passes."""

    name = "torchscript-noisy"

    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: StageProgress, recipe=None) -> LoweredArtifact:
        import copy

        broken = copy.deepcopy(model)
        with torch.no_grad():
            for p in broken.parameters():
                p.copy_(p.to(torch.float16).to(torch.float32) * 1.05)  # a 5 % scale error everywhere
        return super().lower(broken, example, precision, calibration, progress, recipe)
