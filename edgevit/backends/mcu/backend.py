"""The ``mcu`` backend: int8 C for a microcontroller, verified by running the same C on this machine.

``lower`` calibrates with edgevit's PT2E recipe (the MCU's quantizer), converts the graph to the integer IR, plans
the tensor arena, checks it (and, with arm-none-eabi-gcc, the flash the board build takes) against the device's
``mcu:`` section, and writes ``model.evm`` (the artifact) with ``model.c``/``model.h`` and the kernels beside it.
``load`` regenerates the C from ``model.evm``, compiles it with gcc and calls it: ``edgevit compile``'s
verification runs the very C a board runs. The IR never holds a float the kernels read, so the host build, the
board build and ``reference.py`` give the same bytes.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ...errors import EdgevitError
from ..base import Backend, DeviceRun, LoweredArtifact, OpSummary, ParsedProfile, StageProgress, register_backend

__all__ = ["McuBackend", "lower_graph"]


def lower_graph(graph, device=None) -> tuple[dict, dict, dict[str, str], bytes]:
    """IR -> (arena plan dict, flash sizes or None, sources, evm bytes), checked against ``device``'s ``mcu:``."""
    from .planner import check_fits, plan_arena
    from .toolchain import CrossTarget, cross_sizes, tool_version
    from .writer import write_sources

    plan = plan_arena(graph)
    evm = graph.to_bytes()
    sources = write_sources(graph, plan, evm)
    mcu = getattr(device, "mcu", None)
    sizes = None
    if mcu is not None:
        check_fits(plan, None, device.name, mcu.sram_kb, mcu.flash_kb)     # the arena first: no compiler needed
        if tool_version("arm-none-eabi-gcc") is not None:
            sizes = cross_sizes(sources, CrossTarget(tuple(mcu.gcc_flags), mcu.qemu_machine, None))
            check_fits(plan, sizes["flash_bytes"], device.name, mcu.sram_kb, mcu.flash_kb)
    return plan, sizes, sources, evm


def build_firmware(sources: dict[str, str], device) -> tuple[dict | None, dict[str, bytes]]:
    """The serial agent (firmware/agent, runner builtin_model) with this model linked in, for the device's board:
    (manifest entry, {file name: ELF bytes}). None when edgevit has no firmware layer for that board."""
    from .toolchain import elf_sizes, kernels_root

    try:
        from ...firmware.build import BOARDS, build_agent
    except ImportError:
        return None, {}
    board = device.mcu.firmware_board
    if board not in BOARDS:
        return {"built": False, "reason": f"no firmware/boards layer for '{board}'"}, {}
    with tempfile.TemporaryDirectory(prefix="edgevit-mcu-fw-") as scratch:
        folder = Path(scratch)
        for name, text in sources.items():
            (folder / name).write_text(text)
        name = f"firmware-{board}.elf"
        # -O3: the kernels' inner loops are written for the auto-vectoriser (Helium on the M55)
        build_agent(board, folder / name, runner="builtin_model", device=device.name,
                    sources=[folder / "model.c", kernels_root() / "edgevit_kernels.c"],
                    include_dirs=[folder, kernels_root()], opt="-O3")
        data = (folder / name).read_bytes()
        sizes = elf_sizes(folder / name)
    entry = {"built": True, "file": name, "board": board, "runner": "builtin_model", "size_bytes": len(data),
             "sections": sizes,
             "qemu": f"qemu-system-arm -M {device.mcu.qemu_machine} -nographic -kernel {name}"
             if device.mcu.qemu_machine else None}
    return entry, {name: data}


@register_backend
class McuBackend(Backend):
    name = "mcu"
    suffix = ".evm"
    precisions = ("int8",)
    takes_recipe = True        # calibrated with edgevit's PT2E int8 recipe
    takes_device = True        # lower() checks the arena and flash against the device's `mcu:` section
    wire_format = 4            # docs/serial-protocol.md: ArtifactFormat.MCU

    def quantizer(self, recipe=None):
        from .quantizer import mcu_int8_quantizer

        return mcu_int8_quantizer(recipe)

    def lower(self, model, example, precision: str, calibration, progress: StageProgress, recipe=None,
              device=None) -> LoweredArtifact:
        from ...quantization import QuantRecipe, quantize_static
        from .convert import convert_pt2e
        from .quantizer import mcu_int8_quantizer
        from .toolchain import KERNEL_SOURCES, kernels_root, tool_version

        if precision != "int8":
            raise EdgevitError(f"The mcu backend compiles int8 only (the kernels are integer); got '{precision}'.")
        recipe = recipe or QuantRecipe()
        if recipe.fp32_layers:
            raise EdgevitError(f"--fp32-layer {', '.join(recipe.fp32_layers)}: a microcontroller build has no float "
                               "kernels, every layer runs in int8. Drop the option (or --max-drop) for the mcu "
                               "backend.")
        if calibration is None or len(calibration) == 0:
            raise EdgevitError("The mcu backend needs calibration images for int8 (--calib, or the synthetic set).")
        model.eval()
        with progress.stage(f"calibrating (PT2E, {recipe.observer} observers, MCU patterns)",
                            total=len(calibration)) as advance:
            quantized, steps = quantize_static(model, example, recipe, mcu_int8_quantizer(recipe), calibration,
                                               on_batch=advance)
        with progress.stage("converting to the integer IR"):
            graph = convert_pt2e(quantized, example, type(model).__name__)
        with progress.stage("planning the tensor arena, writing C" + (", sizing for the board" if device else "")):
            plan, sizes, sources, evm = lower_graph(graph, device)
        kernels = {name: (kernels_root() / name).read_text() for name in (*KERNEL_SOURCES, "edgevit_kernels.h")}
        mcu = getattr(device, "mcu", None)
        firmware, elf = None, {}
        if mcu is not None and tool_version("arm-none-eabi-gcc") is not None:
            with progress.stage(f"building the serial agent firmware for {mcu.firmware_board}"):
                firmware, elf = build_firmware(sources, device)
        details = {
            "target": "C99 int8 kernels (firmware/kernels), one call per layer",
            "arena": plan.as_dict(),
            "flash": sizes,
            "constants_bytes": graph.const_bytes,
            "layers": [{"name": layer.name, "op": layer.op} for layer in graph.layers],
            "io": {"input": _qtensor(graph.tensors[graph.input]), "output": _qtensor(graph.tensors[graph.output])},
            "board": None if mcu is None else {
                "core": mcu.core, "gcc_flags": list(mcu.gcc_flags), "sram_kb": mcu.sram_kb, "flash_kb": mcu.flash_kb,
                "arena_fraction_of_sram": round(plan.arena_bytes / (mcu.sram_kb * 1024), 4),
                "firmware_board": mcu.firmware_board, "qemu_machine": mcu.qemu_machine},
            "firmware": firmware,
            "quantization": {**recipe.describe(), "steps_ran": steps,
                             "integer_ops": "requantisation (M, shift) single rounding; LUTs for elementwise ops; "
                                            "integer softmax and standardisation (edgevit/backends/mcu/convert.py)"},
        }
        ops = OpSummary()
        ops.delegated.update(graph.ops())      # everything runs in the kernel library; nothing falls back
        ops.delegate_calls = 1                 # one ev_model_run
        return LoweredArtifact(data=evm, suffix=self.suffix, ops=ops, details=details,
                               sidecars={**{name: text.encode() for name, text in {**sources, **kernels}.items()},
                                         **elf})

    def load(self, artifact: bytes | Path, threads: int = 1):
        import numpy as np
        import torch

        from .ir import McuGraph
        from .reference import dequantize_output, quantize_input
        from .toolchain import HostModel, build_host_library

        data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else bytes(artifact)
        graph = McuGraph.from_bytes(data)
        _, _, sources, _ = lower_graph(graph)
        scratch = tempfile.TemporaryDirectory(prefix="edgevit-mcu-")
        library = build_host_library(sources, Path(scratch.name) / "model.so")
        host = HostModel(library, graph.tensors[graph.input].size, graph.tensors[graph.output].size,
                         len(graph.layers))
        in_shape = graph.tensors[graph.input].shape
        out_shape = graph.tensors[graph.output].shape

        def run(x: torch.Tensor) -> torch.Tensor:
            q = quantize_input(graph, x.detach().reshape(-1, *in_shape[1:]))
            outs = [dequantize_output(graph, host(q[i:i + 1])).reshape(out_shape[1:]) for i in range(q.shape[0])]
            return torch.from_numpy(np.stack(outs))

        run._keep = (scratch, host)   # the library's folder lives as long as the runner
        return run

    def available(self) -> bool:
        """False: a board runs an MCU artifact (the C agent it was flashed with, runner builtin_model); the Python
        serial agent has nothing to run it in. ``load`` (verification here) needs only gcc."""
        return False

    def parse_profile(self, run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
        """The per-layer counter deltas the flashed board reports (``counts[i]`` of ``ev_model_run``)."""
        if not run.op_profile:
            raise EdgevitError("The board brought back no per-layer counts for the MCU model; is the agent on the "
                               "other end the firmware built for this artifact (firmware-<board>.elf, runner "
                               "builtin_model)? Run it again.")
        kinds = sorted({r.get("counter_kind", "instructions") for r in run.op_profile})
        rows = [{"name": r["name"], "op_type": r["op"], "delegate": None, "module": r["name"].split(":")[0],
                 "module_type": None, "ms": float(r.get("ms") or 0.0), "count": int(r["count"]),
                 "counter_kind": r.get("counter_kind", "instructions")} for r in run.op_profile]
        notes = [] if kinds == ["cycles"] else [
            f"per-layer figures are {', '.join(kinds)} counts, not cycles (QEMU does not model a pipeline)"]
        extra = {"counter_kind": kinds[0] if len(kinds) == 1 else kinds,
                 "total_count": sum(r["count"] for r in rows),
                 "timing_source": "the board's millisecond clock around ev_model_run (under QEMU -icount: virtual "
                                  "time, 1 ns per instruction)",
                 "op_timing": f"per-layer {' / '.join(kinds)} counter deltas (ev_model_run's counts[]), not "
                              "milliseconds",
                 "init_ms": None, "delegate_calls": [],
                 "output_sha256": run.device_info.get("output_sha256"),
                 "module_mapping": "the generated model's layer names (module path: operator)"}
        return ParsedProfile(times_ms=list(run.times_ms), load_ms=run.load_ms, rows=rows, extra=extra, notes=notes)

    def versions(self) -> dict[str, str]:
        from .toolchain import tool_version

        found = {name: tool_version(name) for name in ("gcc", "arm-none-eabi-gcc", "qemu-system-arm")}
        return {name: v for name, v in found.items() if v is not None}


def _qtensor(t) -> dict:
    return {"shape": list(t.shape), "dtype": "int8", "scale": t.scale, "zero_point": t.zero_point}
