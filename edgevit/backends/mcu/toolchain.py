"""Compilers and the emulator for the MCU target: gcc (the model on this machine), arm-none-eabi-gcc (the board),
qemu-system-arm (the board emulated). Every build goes to a temporary name and is renamed when complete.

The kernels (``firmware/kernels``) are found like the HLS sources: ``edgevit/_firmware/kernels`` in a wheel, else
``firmware/kernels`` at the root of a source checkout.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import EdgevitError
from ...firmware.build import run_tool

__all__ = ["ToolchainError", "kernels_root", "tool_version", "build_host_library", "HostModel", "CrossTarget",
           "cross_sizes", "elf_sizes", "build_semihost_elf", "run_qemu_semihost", "KERNEL_SOURCES"]

KERNEL_SOURCES = ("edgevit_kernels.c",)
_APT = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
        "arm-none-eabi-size": "binutils-arm-none-eabi", "qemu-system-arm": "qemu-system-arm"}


class ToolchainError(EdgevitError):
    """A missing compiler or emulator, or one that rejected the generated model."""


def kernels_root() -> Path:
    """``firmware/kernels``: packaged as ``edgevit/_firmware/kernels`` in a wheel."""
    package = Path(__file__).resolve().parents[2]            # .../edgevit
    packaged = package / "_firmware" / "kernels"
    return packaged if packaged.is_dir() else package.parent / "firmware" / "kernels"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolchainError(f"{name} is not on PATH; the MCU target needs it. Install it (Debian/Ubuntu: "
                             f"`sudo apt-get install {_APT.get(name, name)}`).")
    return found


@functools.cache
def tool_version(name: str) -> str | None:
    """``gcc -dumpfullversion`` (None when the tool is not installed)."""
    if shutil.which(name) is None:
        return None
    flag = ["--version"] if name.startswith("qemu") else ["-dumpfullversion"]
    done = subprocess.run([name, *flag], capture_output=True, text=True, timeout=60, check=False)
    text = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    match = re.search(r"(\d+\.\d+(\.\d+)?)", text)
    return match.group(1) if match else text or None


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    return run_tool(cmd, what, timeout, ToolchainError)


def _write_sources(folder: Path, sources: dict[str, str]) -> list[Path]:
    paths = []
    for name, text in sources.items():
        path = folder / name
        path.write_text(text)
        if name.endswith(".c"):
            paths.append(path)
    return paths


def build_host_library(sources: dict[str, str], output: Path, timeout: float = 600) -> Path:
    """model.c + the kernels -> a shared library for this machine (gcc -O2 -fPIC)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgevit-mcu-", dir=output.parent) as scratch:
        folder = Path(scratch)
        model = _write_sources(folder, sources)
        kernels = [kernels_root() / s for s in KERNEL_SOURCES]
        tmp = folder / "model.so"
        _run([_tool("gcc"), "-std=c99", "-O2", "-Wall", "-fPIC", "-shared", f"-I{kernels_root()}", f"-I{folder}",
              *map(str, model + kernels), "-o", str(tmp)], "gcc (the model for this machine)", timeout)
        os.replace(tmp, output)
    return output


class HostModel:
    """The generated model compiled for this machine, called through ctypes."""

    def __init__(self, library: Path, input_bytes: int, output_bytes: int, layers: int):
        self._lib = ctypes.CDLL(str(library))
        self._run = self._lib.ev_model_run
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.input_bytes, self.output_bytes, self.layers = input_bytes, output_bytes, layers
        declared = ctypes.c_uint32.in_dll(self._lib, "ev_model_input_bytes").value
        if declared != input_bytes:
            raise ToolchainError(f"the compiled model takes {declared} input bytes, the IR {input_bytes}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(-1)
        if x.size != self.input_bytes:
            raise EdgevitError(f"the model takes {self.input_bytes} int8 values, got {x.size}")
        out = np.zeros(self.output_bytes, dtype=np.int8)
        rc = self._run(x.ctypes.data, out.ctypes.data, None, None)
        if rc != 0:
            raise ToolchainError(f"ev_model_run returned {rc}")
        return out


@dataclass(frozen=True)
class CrossTarget:
    """How to compile for a board: the profile's gcc flags and the QEMU machine that emulates it."""

    cflags: tuple[str, ...]              # -mcpu / -mfpu / -mfloat-abi
    qemu_machine: str | None
    linker_script: str | None            # firmware/kernels/tests/<board>.ld for the semihosting test program


def _cross_compile(sources: dict[str, str], target: CrossTarget, folder: Path, timeout: float,
                   opt: str = "-O3") -> list[Path]:
    gcc = _tool("arm-none-eabi-gcc")
    objects = []
    for src in _write_sources(folder, sources) + [kernels_root() / s for s in KERNEL_SOURCES]:
        obj = folder / (src.stem + ".o")
        _run([gcc, "-std=c99", opt, "-Wall", "-mthumb", *target.cflags, "-ffunction-sections", "-fdata-sections",
              f"-I{kernels_root()}", f"-I{folder}", "-c", str(src), "-o", str(obj)],
             f"arm-none-eabi-gcc ({src.name})", timeout)
        objects.append(obj)
    return objects


def cross_sizes(sources: dict[str, str], target: CrossTarget, timeout: float = 600) -> dict:
    """Compile model.c + the kernels for the board and read ``arm-none-eabi-size``: flash = text + data,
    SRAM = data + bss (the arena is the bss)."""
    with tempfile.TemporaryDirectory(prefix="edgevit-mcu-size-") as scratch:
        objects = _cross_compile(sources, target, Path(scratch), timeout)
        done = _run([_tool("arm-none-eabi-size"), "-B", *map(str, objects)], "arm-none-eabi-size", 120)
    totals = {"text": 0, "data": 0, "bss": 0}
    per_file = {}
    for line in done.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6:
            text, data, bss = (int(v) for v in parts[:3])
            per_file[Path(parts[-1]).name] = {"text": text, "data": data, "bss": bss}
            totals = {"text": totals["text"] + text, "data": totals["data"] + data, "bss": totals["bss"] + bss}
    return {"flash_bytes": totals["text"] + totals["data"], "sram_static_bytes": totals["data"] + totals["bss"],
            **totals, "objects": per_file, "cflags": ["-O3", "-mthumb", *target.cflags],
            "tool": f"arm-none-eabi-gcc {tool_version('arm-none-eabi-gcc')}, arm-none-eabi-size -B"}


def elf_sizes(elf: Path) -> dict:
    """``arm-none-eabi-size -B`` of a linked ELF: text, data, bss; flash = text + data."""
    done = _run([_tool("arm-none-eabi-size"), "-B", str(elf)], "arm-none-eabi-size", 120)
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data}


def build_semihost_elf(sources: dict[str, str], inputs: np.ndarray, output_bytes: int, target: CrossTarget,
                       output: Path, timeout: float = 600) -> Path:
    """The model + kernels + ``firmware/kernels/tests/semihost_main.c`` with ``inputs`` (N, input bytes) compiled
    in, linked for the board with newlib's semihosting (rdimon) into an ELF QEMU runs with ``-kernel``."""
    if target.linker_script is None:
        raise ToolchainError("this board has no semihosting test layout (firmware/kernels/tests/*.ld)")
    tests = kernels_root() / "tests"
    inputs = np.ascontiguousarray(inputs, dtype=np.int8).reshape(len(inputs), -1)
    rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in row) + "}" for row in inputs)
    header = (f"#define EV_TEST_COUNT {len(inputs)}\n#define EV_TEST_INPUT_BYTES {inputs.shape[1]}u\n"
              f"#define EV_TEST_OUTPUT_BYTES {output_bytes}u\n"
              f"static const int8_t ev_test_inputs[EV_TEST_COUNT][EV_TEST_INPUT_BYTES] = {{\n{rows}\n}};\n")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgevit-mcu-", dir=output.parent) as scratch:
        folder = Path(scratch)
        (folder / "ev_test_inputs.h").write_text(header)
        objects = _cross_compile(sources, target, folder, timeout)
        gcc = _tool("arm-none-eabi-gcc")
        for src in (tests / "semihost_main.c", tests / "startup_semihost.c"):
            obj = folder / (src.stem + ".o")
            _run([gcc, "-std=c99", "-O2", "-Wall", "-mthumb", *target.cflags, "--specs=rdimon.specs",
                  f"-I{kernels_root()}", f"-I{folder}", "-c", str(src), "-o", str(obj)],
                 f"arm-none-eabi-gcc ({src.name})", timeout)
            objects.append(obj)
        tmp = folder / "test.elf"
        _run([gcc, "-mthumb", *target.cflags, "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles",
              f"-L{tests}", f"-T{tests / target.linker_script}", "-Wl,--gc-sections", *map(str, objects),
              "-o", str(tmp)], "linking the semihosting test program", timeout)
        os.replace(tmp, output)
    return output


def run_qemu_semihost(elf: Path, machine: str, timeout: float = 300) -> list[np.ndarray]:
    """Run the test program under ``qemu-system-arm -M machine -semihosting -nographic``; the outputs it printed."""
    cmd = [_tool("qemu-system-arm"), "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    done = _run(cmd, f"QEMU ({machine})", timeout)
    outputs: dict[int, np.ndarray] = {}
    for line in done.stdout.splitlines():
        if line.startswith("EV_OUTPUT "):
            _, index, rc, data = line.split()
            if int(rc) != 0:
                raise ToolchainError(f"ev_model_run returned {rc} on the emulated board for input {index}")
            outputs[int(index)] = np.frombuffer(bytes.fromhex(data), dtype=np.int8)
    if "EV_DONE" not in done.stdout:
        raise ToolchainError(f"the test program on {machine} did not finish; its output:\n{done.stdout[-2000:]}")
    return [outputs[i] for i in sorted(outputs)]


