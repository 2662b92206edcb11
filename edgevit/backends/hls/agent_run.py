"""The hls artifact on a board over serial: the host C agent built for an hls project (its PL is the
accelerator's C-simulation, firmware/agent/runners/hls_csim.cpp), the deterministic input that agent runs, and
the per-layer rows its profile brings back.

``edgevit profile ARTIFACT --via serial`` sends ``weights.bin`` (format 3); the agent answers per layer with the
cycles of the C-simulation's schedule model, the modelled PL time at the design's clock, and the output's sha256.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import EdgevitError
from ...firmware import FirmwareBuild, build_agent
from ..base import DeviceRun, ParsedProfile
from .schedule import Schedule
from .toolchain import ap_types_include

__all__ = ["agent_input", "build_host_agent", "layer_cycles", "parse_agent_profile"]


def agent_input(tokens: int, patch_dim: int) -> np.ndarray:
    """The raw act values the host agent feeds the accelerator (tokens, patch_dim), as hls_csim.cpp makes them:
    the class token's row zero, else ``((i * 2654435761 mod 2^32) >> 16 & 0x7FFF) - 16384``."""
    i = np.arange(tokens * patch_dim, dtype=np.uint64)
    raw = (((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(16)) & np.uint64(0x7FFF)
    raw = raw.astype(np.int64) - 16384
    raw[:patch_dim] = 0
    return raw.reshape(tokens, patch_dim)


def build_host_agent(artifact_dir: str | Path, output: str | Path, *, device: str | None = None) -> FirmwareBuild:
    """Compile the host agent for the hls artifact in ``artifact_dir`` (its generated project and task)."""
    folder = Path(artifact_dir)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        task, board = int(manifest["task"]["index"]), manifest["device"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgevitError(f"{folder} is not an hls artifact folder (manifest.json: {e}); give the folder "
                           "`edgevit compile MODEL --device <fpga board>` wrote.") from None
    src = folder / "project" / "src"
    return build_agent("host", output, runner="hls_csim", device=device or board,
                       sources=[src / "moe_vit_top.cpp"], include_dirs=[src, ap_types_include()],
                       defines={"EV_TASK": task})


def layer_cycles(s: Schedule, moe_blocks: set[int]) -> list[tuple[str, int]]:
    """The schedule's running total at each layer boundary the agent reports, as per-layer differences.

    A layer ends when its last step's compute is done: the running total after a step is the committed steps
    plus that step's compute. Experts of a MoE block are one row (``blocks.i.experts``)."""
    rows: list[tuple[str, int]] = []
    total, previous, mark = 0, 0, 0
    for k, step in enumerate(s.steps):
        total += max(previous, step.load)
        previous = step.compute
        name = step.layer
        parts = name.split(".")
        if len(parts) >= 3 and parts[2] == "expert":
            name = f"blocks.{parts[1]}.experts"
        following = s.steps[k + 1].layer if k + 1 < len(s.steps) else None
        if following is not None:
            nparts = following.split(".")
            following = f"blocks.{nparts[1]}.experts" if len(nparts) >= 3 and nparts[2] == "expert" else following
        if following == name:
            continue
        rows.append((name, total + previous - mark))
        mark = total + previous
    return rows


def parse_agent_profile(run: DeviceRun) -> ParsedProfile:
    if not run.op_profile or not run.times_ms:
        raise EdgevitError("The board brought back no per-layer cycles for the hls artifact; is the agent on the "
                           "other end the hls C-simulation agent (firmware/agent, runner hls_csim)? Run it again.")
    rows = [{"name": r["name"], "op_type": r["op"], "delegate": None, "module": r["name"], "module_type": None,
             "ms": float(r["ms"]), "cycles": int(r["count"]), "counter_kind": r.get("counter_kind", "cycles")}
            for r in run.op_profile]
    info = run.device_info
    extra = {"timing_source": "the accelerator's cycle model in C-simulation (edgevit.backends.hls.schedule), "
                              f"at {info.get('pl_clock_mhz')} MHz",
             "op_timing": "cycles of each layer in the schedule model (DDR loads overlapped with the previous "
                          "step's compute, as the C-simulation counts them); ms = cycles at the design's clock",
             "init_ms": None, "delegate_calls": [],
             "counter_kind": "cycles", "cycles_total": info.get("cycles_total"),
             "output_sha256": info.get("output_sha256"),
             "module_mapping": "the accelerator's layer names (edgevit.backends.hls.schedule)"}
    return ParsedProfile(times_ms=run.times_ms, load_ms=run.load_ms, rows=rows, extra=extra)
