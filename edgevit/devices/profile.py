"""Device profiles: published hardware facts plus what ``compile`` needs, validated by a pydantic schema.

Profiles are data (``profiles/*.yaml`` at the repo root, or a user's ``--profiles DIR``). A broken file
fails with its path, the field and what was expected, never a traceback.
"""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .._io import require_folder
from ..backends import list_backends
from ..errors import EdgevitError, UnknownNameError

__all__ = ["DeviceProfile", "CpuCluster", "Compute", "Fpga", "FpgaAxi", "FpgaDdr", "Mcu", "load_profiles", "get_device",
           "list_devices", "BUILTIN_PROFILE_DIR", "ProfileError", "host_facts"]

# A wheel carries the profiles inside the package; a source checkout (editable install) has them at the root.
_PACKAGED = Path(__file__).resolve().parents[1] / "_profiles"
BUILTIN_PROFILE_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "profiles"
Precision = Literal["fp32", "fp16", "int8", "fixed"]  # fixed: ap_fixed formats of the hls backend (FPGA)


class ProfileError(EdgevitError):
    """A profile file that cannot be read or does not follow the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuCluster(_Strict):
    core: str
    count: int = Field(gt=0)
    ghz: float | None = Field(default=None, gt=0, description="max clock; None where not published")


class Cpu(_Strict):
    clusters: list[CpuCluster] = Field(min_length=1)
    arch: str = "arm64"

    @property
    def cores(self) -> int:
        return sum(c.count for c in self.clusters)


class Memory(_Strict):
    ram_gb: float = Field(gt=0)
    type: str | None = None
    bandwidth_gbps: float | None = Field(default=None, gt=0, description="peak DRAM bandwidth, GB/s")


class Compute(_Strict):
    """Per-core figures the latency model (``edgevit estimate``) starts from before any calibration."""

    peak_gmacs_per_s: dict[Precision, float | None] = Field(
        default_factory=dict, description="one fastest core, GMAC/s per kernel precision; None: unknown")
    basis: Literal["published", "derived", "measured"]
    formula: str | None = Field(default=None, description="how a derived figure was computed")


class FpgaAxi(_Strict):
    """The accelerator's AXI master ports into the PS's DDR, as the design uses them."""

    ports: int = Field(gt=0)
    data_bits: int = Field(gt=0, description="data width per port at the PS side, bits")


class FpgaDdr(_Strict):
    """The DDR the accelerator reads weights and activations from (the PS's DDR on a Zynq board)."""

    type: str
    bus_bits: int = Field(gt=0)
    mts: int = Field(gt=0, description="transfer rate, MT/s")
    gbps: float | None = Field(default=None, gt=0, description="peak GB/s, derived: bus_bits/8 x MT/s; "
                               "computed when left out, checked against the formula when written")

    @model_validator(mode="after")
    def _peak_is_derived(self) -> FpgaDdr:
        derived = self.bus_bits / 8 * self.mts / 1000
        if self.gbps is None:
            object.__setattr__(self, "gbps", round(derived, 2))
        elif not math.isclose(self.gbps, derived, rel_tol=5e-3, abs_tol=0.01):
            raise ValueError(f"gbps {self.gbps:g} is not bus_bits/8 x MT/s = {self.bus_bits}/8 x {self.mts} / 1000 "
                             f"= {derived:.2f} GB/s (the peak is derived; leave it out to have it computed)")
        return self


class Fpga(_Strict):
    """The programmable logic of an FPGA board: what the HLS estimator and generator size a design against."""

    part: str = Field(description="full Xilinx part name, e.g. xczu9eg-ffvb1156-2-e")
    family: str = Field(description='e.g. "Zynq UltraScale+ MPSoC"')
    clock_mhz: float = Field(gt=0, description="the accelerator clock the design targets on this board")
    dsp: int = Field(ge=0)
    bram36: int = Field(ge=0, description="36 Kb block RAMs")
    uram: int = Field(ge=0, description="288 Kb UltraRAMs")
    lut: int = Field(ge=0)
    ff: int | None = Field(default=None, ge=0, description="flip-flops; None where not published")
    dsp_kind: str = "DSP48E2"
    bram36_kbits: int = Field(default=36, gt=0)
    uram_kbits: int = Field(default=288, gt=0)
    axi: FpgaAxi | None = Field(description="AXI ports into the PS's DDR; None on a board without a PS (the open "
                                "flow's ECP5 / iCE40 boards), which the HLS accelerator cannot target")
    ddr: FpgaDdr | None = Field(description="the DRAM the accelerator reads; None where it has none it can use")
    pynq: bool = Field(description="the board runs PYNQ (`edgevit flash` loads an Overlay there)")
    openfpgaloader_board: str | None = Field(default=None, description="openFPGALoader's --board name, if it has one")
    vivado_board_part: str | None = Field(default=None, description='e.g. "xilinx.com:zcu102:part0:3.4"')

    def summary(self) -> str:
        return (f"{self.dsp} {self.dsp_kind}, {self.bram36} BRAM{self.bram36_kbits}, {self.uram} URAM, "
                f"{self.lut / 1000:.0f}k LUT @ {self.clock_mhz:g} MHz")


class Mcu(_Strict):
    """A microcontroller: the memories the MCU backend plans a model into, and how its firmware is built and run."""

    core: Literal["cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85"]
    gcc_flags: list[str] = Field(min_length=1, description="arm-none-eabi-gcc target flags (-mcpu/-mfpu/-mfloat-abi)")
    clock_mhz: float = Field(gt=0)
    sram_kb: float = Field(gt=0, description="contiguous SRAM the tensor arena may use (KB)")
    flash_kb: float = Field(gt=0, description="non-volatile memory for code and weights (KB)")
    itcm_kb: float | None = Field(default=None, ge=0)
    dtcm_kb: float | None = Field(default=None, ge=0)
    total_sram_kb: float | None = Field(default=None, gt=0, description="all on-chip SRAM, of which sram_kb is the "
                                        "largest contiguous block the arena gets")
    helium: bool = Field(description="the core has the M-profile Vector Extension (MVE, Helium)")
    firmware_board: str = Field(description="the board layer of firmware/boards the firmware is built for")
    qemu_machine: str | None = Field(description="qemu-system-arm -M machine that runs the firmware; None: none")
    emulation: str | None = Field(default=None, description="how an emulated run relates to the real part")

    @field_validator("gcc_flags")
    @classmethod
    def _names_the_core(cls, flags: list[str]) -> list[str]:
        if not any(f.startswith("-mcpu=") for f in flags):
            raise ValueError("gcc_flags must include -mcpu=<core> (e.g. -mcpu=cortex-m55)")
        return flags

    @model_validator(mode="after")
    def _arena_fits_the_chip(self) -> Mcu:
        if self.total_sram_kb is not None and self.sram_kb > self.total_sram_kb:
            raise ValueError(f"sram_kb {self.sram_kb:g} is larger than total_sram_kb {self.total_sram_kb:g}")
        if f"-mcpu={self.core}" not in self.gcc_flags:
            raise ValueError(f"gcc_flags {self.gcc_flags} do not build for core {self.core} (-mcpu={self.core})")
        return self

    def summary(self) -> str:
        return f"{self.core} @ {self.clock_mhz:g} MHz" + (" (Helium)" if self.helium else "")


class CompileSettings(_Strict):
    backends: list[str] = Field(description="registered backend names (edgevit.backends); empty only on an FPGA "
                                            "board that no backend compiles a model for (the open flow's boards: "
                                            "`edgevit rtl build`)")
    preferred_backend: str | None = Field(description="one of backends; None when backends is empty")
    preferred_by_family: dict[str, str] = Field(
        default_factory=dict, description="model family -> backend for --backend auto, where `edgevit bench` "
                                          "measured a different fastest backend per family (else preferred_backend)")
    delegate: Literal["xnnpack"] | None = Field(
        default="xnnpack", description="the CPU runtimes' delegate; None on an FPGA board (nothing to delegate to)")
    default_precision: Precision = "int8"
    threads: int = Field(gt=0, description="CPU threads the runtime should use (the big cores; an FPGA board: "
                                           "its PS's cores)")
    model_memory_mb: float = Field(gt=0, description="weights + activations a model may use (an FPGA board: "
                                                     "the DDR its weight image may use)")

    @model_validator(mode="after")
    def _preferred_is_supported(self) -> CompileSettings:
        known = list_backends()
        unknown = [b for b in self.backends if b not in known]
        if unknown:
            raise ValueError(f"backend(s) {', '.join(unknown)} are not registered; edgevit has "
                             f"{', '.join(known)}")
        if not self.backends and self.preferred_backend is None:
            return self
        if self.preferred_backend not in self.backends:
            raise ValueError(f"preferred_backend '{self.preferred_backend}' is not in backends {self.backends}")
        wrong = {f: b for f, b in self.preferred_by_family.items() if b not in self.backends}
        if wrong:
            raise ValueError(f"preferred_by_family names backends the device does not list ({wrong}); "
                             f"backends: {self.backends}")
        return self

    def preferred_for(self, family: str | None) -> str | None:
        """The backend --backend auto starts with for a model of ``family`` (None: a user module)."""
        return self.preferred_by_family.get(family, self.preferred_backend) if family else self.preferred_backend


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    display_name: str
    kind: Literal["phone", "board", "desktop", "fpga", "mcu"]
    os: str
    soc: str
    cpu: Cpu | None = Field(description="the host CPU; None only for an FPGA board without one (iCEBreaker)")
    gpu: str | None = None
    npu: str | None = None
    memory: Memory
    compute: Compute | None = None
    fpga: Fpga | None = Field(default=None, validate_default=True,
                              description="the programmable logic; required for kind fpga, refused otherwise")
    mcu: Mcu | None = Field(default=None, validate_default=True,
                            description="the microcontroller's memories and build; required for kind mcu, refused "
                                        "otherwise")
    compile: CompileSettings
    sources: list[str] = Field(default_factory=list)
    notes: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fpga_delegate_defaults_to_none(cls, data):
        """An FPGA board's compile settings have no XNNPACK delegate: the schema's default does not apply."""
        if isinstance(data, dict) and data.get("kind") in ("fpga", "mcu") and isinstance(data.get("compile"), dict):
            data = {**data, "compile": {"delegate": None, **data["compile"]}}
        return data

    @field_validator("fpga")
    @classmethod
    def _fpga_section_matches_kind(cls, fpga: Fpga | None, info: ValidationInfo) -> Fpga | None:
        kind = info.data.get("kind")  # absent when kind itself failed: that error is reported instead
        if kind == "fpga" and fpga is None:
            raise ValueError("kind 'fpga' needs an `fpga:` section (part, family, clock_mhz, dsp, bram36, uram, lut, "
                             "ff, axi, ddr, pynq; see edgevit/devices/profile.py)")
        if kind is not None and kind != "fpga" and fpga is not None:
            raise ValueError(f"an `fpga:` section belongs to kind 'fpga' only; this profile is kind '{kind}' "
                             "(remove the section or set kind: fpga)")
        return fpga

    @field_validator("mcu")
    @classmethod
    def _mcu_section_matches_kind(cls, mcu: Mcu | None, info: ValidationInfo) -> Mcu | None:
        kind = info.data.get("kind")
        if kind == "mcu" and mcu is None:
            raise ValueError("kind 'mcu' needs an `mcu:` section (core, gcc_flags, clock_mhz, sram_kb, flash_kb, "
                             "helium, firmware_board, qemu_machine; see edgevit/devices/profile.py)")
        if kind is not None and kind != "mcu" and mcu is not None:
            raise ValueError(f"an `mcu:` section belongs to kind 'mcu' only; this profile is kind '{kind}' "
                             "(remove the section or set kind: mcu)")
        return mcu

    @field_validator("compile")
    @classmethod
    def _fpga_has_no_cpu_delegate(cls, compile_: CompileSettings, info: ValidationInfo) -> CompileSettings:
        kind = info.data.get("kind")
        if kind in ("fpga", "mcu") and compile_.delegate is not None:
            board = "an FPGA board" if kind == "fpga" else "a microcontroller"
            raise ValueError(f"delegate '{compile_.delegate}' is a CPU runtime's delegate; {board} has none "
                             "(leave it out)")
        return compile_

    @model_validator(mode="after")
    def _only_fpga_boards_go_without(self) -> DeviceProfile:
        """A CPU device needs its CPU and a backend; the HLS backend needs AXI ports into DDR."""
        if self.kind != "fpga":
            if self.cpu is None:
                raise ValueError(f"field 'cpu' is required for kind '{self.kind}' (only an FPGA board may omit it)")
            if not self.compile.backends:
                raise ValueError(f"compile.backends is empty; kind '{self.kind}' needs at least one backend")
        elif "hls" in self.compile.backends and self.fpga is not None and (self.fpga.axi is None or
                                                                          self.fpga.ddr is None):
            raise ValueError("backend 'hls' streams weights over AXI ports into DDR: fpga.axi and fpga.ddr are "
                             "required (a board without a PS builds with `edgevit rtl build`; list no backends)")
        return self

    def summary_row(self) -> dict[str, str]:
        """One compact table row (the full facts are in ``edgevit devices --json``)."""
        clocks = [c.ghz for c in self.cpu.clusters if c.ghz] if self.cpu else []
        cpu = (f"{self.cpu.cores} cores" + (f" ≤{max(clocks):g} GHz" if clocks else "")) if self.cpu else "-"
        backends = ", ".join(b + ("*" if b == self.compile.preferred_backend else "")
                             for b in self.compile.backends) or "- (edgevit rtl build)"
        accelerators = " / ".join(x.split(" (")[0] for x in (self.gpu, self.npu) if x) or "-"
        if self.fpga is not None:  # the part and its fabric, in the same columns as the SoC and GPU/NPU
            accelerators = f"PL: {self.fpga.summary()}"
        ram, budget = f"{self.memory.ram_gb:g} GB", f"{self.compile.model_memory_mb:g} MB"
        if self.mcu is not None:   # kilobytes: SRAM for the arena / flash for weights and code
            cpu = self.mcu.summary()
            ram = f"{self.mcu.sram_kb:g} KB SRAM"           # the arena's
            budget = f"{self.mcu.flash_kb:g} KB flash"      # weights + code
        return {"name": self.name, "SoC": self.fpga.part if self.fpga is not None else self.soc, "CPU": cpu,
                "GPU / NPU": accelerators,
                "RAM": ram, "backends (*pref.)": backends,
                "prec.": self.compile.default_precision, "budget": budget}


def host_facts() -> dict:
    """Fill the ``host`` profile from this machine (its facts are not known until run time)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = os.cpu_count() or 1
    return {"soc": model, "ram_gb": round(ram_gb, 1), "cores": cores, "arch": platform.machine()}


def _format_validation_error(path: Path, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        problems.append(f"field '{field}': {e['msg']}{got_text}")
    return f"Device profile {path} is invalid: " + "; ".join(problems) + "."


def load_profile_file(path: Path) -> DeviceProfile:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"Cannot read device profile {path}: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"Device profile {path} must be a YAML mapping, got {type(data).__name__}.")
    if data.get("name") == "host" and data.get("detect") is True:
        data = _apply_host_facts(data)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(_format_validation_error(path, e)) from None


def _apply_host_facts(data: dict) -> dict:
    facts = host_facts()
    data = {k: v for k, v in data.items() if k != "detect"}
    data["soc"] = facts["soc"]
    data["cpu"] = {"arch": facts["arch"], "clusters": [
        {"core": facts["soc"], "count": facts["cores"]}]}
    data.setdefault("memory", {})["ram_gb"] = facts["ram_gb"]
    compile_ = data.setdefault("compile", {})
    compile_.setdefault("threads", facts["cores"])
    # A quarter of RAM: leaves room for the OS, the test runner and a second model.
    compile_.setdefault("model_memory_mb", round(facts["ram_gb"] * 1024 / 4))
    return data


def load_profiles(extra_dirs: list[Path] | None = None) -> dict[str, DeviceProfile]:
    """All profiles: built-in first, then each ``extra_dirs`` (a user file overrides a built-in name)."""
    profiles: dict[str, DeviceProfile] = {}
    for directory in [BUILTIN_PROFILE_DIR, *(extra_dirs or [])]:
        directory = require_folder(directory, "Profile directory", "device profile YAML files", ProfileError)
        for path in sorted(directory.glob("*.y*ml")):
            profile = load_profile_file(path)
            if profile.name != path.stem:
                raise ProfileError(f"Device profile {path}: field 'name' is '{profile.name}' but the file is "
                                   f"named '{path.name}'; they must agree (expected name '{path.stem}').")
            profiles[profile.name] = profile
    return profiles


def list_devices(extra_dirs: list[Path] | None = None) -> list[str]:
    return sorted(load_profiles(extra_dirs))


def get_device(name: str, extra_dirs: list[Path] | None = None) -> DeviceProfile:
    profiles = load_profiles(extra_dirs)
    if name not in profiles:
        raise UnknownNameError("device", name, profiles)
    return profiles[name]
