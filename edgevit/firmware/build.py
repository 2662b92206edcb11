"""Build the C serial agent (``firmware/agent/``) for a board (``firmware/boards/<name>/``).

``host``: gcc/g++ into a POSIX program (its UART a TCP socket or a pty); the Cortex-M boards: arm-none-eabi-gcc
(``-mcpu/-mfpu/-mfloat-abi`` per core, ``--specs=nano.specs``, ``-O2``) into an ELF that QEMU runs with
``-kernel``. A runner (``firmware/agent/runners/``) says what the build can run; its extra sources and include
folders (an hls artifact's project, a generated MCU model) come from the caller. The output is written to a
temporary name and renamed, so a failed build never leaves a file that looks current.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgevitError

__all__ = ["Board", "BOARDS", "BuildError", "FirmwareBuild", "build_agent", "build_selftest", "firmware_root",
           "run_tool", "RUNNERS"]

AGENT_SOURCES = ("agent.c", "frames.c", "crc.c", "sha256.c")
RUNNERS = {"hls_csim": "runners/hls_csim.cpp", "builtin_model": "runners/builtin_model.c"}
_LOG_LINES = 30


class BuildError(EdgevitError):
    """A compiler is missing or rejected the firmware."""


@dataclass(frozen=True)
class Board:
    name: str
    cpu: str | None                 # -mcpu; None: the host
    arch_flags: tuple[str, ...]     # FPU / float ABI
    machine: str | None             # QEMU -M
    sysclk_hz: int | None           # the clock SysTick counts (QEMU's board model)
    max_payload: int                # what the agent advertises (its receive buffer)


# Clocks and memory maps: QEMU hw/arm/mps2.c (SYSCLK_FRQ 25 MHz) and hw/arm/mps2-tz.c (AN547 sysclk 32 MHz);
# firmware/boards/*/board.ld cite the application notes.
BOARDS: dict[str, Board] = {
    "host": Board("host", None, (), None, None, 4096),
    "mps2-an386": Board("mps2-an386", "cortex-m4", ("-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), "mps2-an386",
                        25_000_000, 1024),
    "mps2-an500": Board("mps2-an500", "cortex-m7", ("-mfpu=fpv5-d16", "-mfloat-abi=hard"), "mps2-an500",
                        25_000_000, 1024),
    "mps3-an547": Board("mps3-an547", "cortex-m55", ("-mfloat-abi=hard",), "mps3-an547", 32_000_000, 1024),
}


@dataclass(frozen=True)
class FirmwareBuild:
    board: Board
    path: Path                      # the host program or the ELF
    runner: str
    device: str                     # the device profile the agent reports (Cortex-M: compiled in)
    command: list[str] = field(default_factory=list)


def firmware_root() -> Path:
    """The firmware sources: ``edgevit/_firmware`` in a wheel, else ``firmware/`` at the root of a checkout."""
    package = Path(__file__).resolve().parents[1]           # .../edgevit
    packaged = package / "_firmware"
    return packaged if packaged.is_dir() else package.parent / "firmware"


def _tool(name: str, apt: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BuildError(f"{name} is not on PATH; the firmware is built with it. Install it (Debian/Ubuntu: "
                         f"`sudo apt-get install {apt}`).")
    return found


def run_tool(cmd: list[str], what: str, timeout: float,
             error: type[EdgevitError] = EdgevitError) -> subprocess.CompletedProcess:
    """Run a compiler / emulator; a timeout or a non-zero exit becomes ``error`` naming ``what`` (e.g. "g++
    building x"), the command and the last lines of its output. The one place tool failures are worded."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise error(f"{what} took longer than {timeout:.0f} s and was stopped; check the machine's load.") from None
    if done.returncode != 0:
        log = "\n".join((done.stdout + done.stderr).rstrip().splitlines()[-_LOG_LINES:])
        raise error(f"{what} failed (exit {done.returncode}); command: {' '.join(cmd)}\n"
                    f"last lines of its output:\n{log}")
    return done


def _run(cmd: list[str], what: str, timeout: float) -> None:
    run_tool(cmd, f"Building {what}", timeout, BuildError)


def build_agent(board: str, output: str | Path, *, runner: str, device: str, sources: Sequence[str | Path] = (),
                include_dirs: Sequence[str | Path] = (), defines: dict[str, str | int] | None = None,
                opt: str = "-O2", timeout: float = 900) -> FirmwareBuild:
    """Compile the agent + ``runner`` + the board layer (+ ``sources``) for ``board`` into ``output``."""
    if board not in BOARDS:
        raise BuildError(f"Unknown board '{board}'; the firmware has board layers for {', '.join(BOARDS)}.")
    if runner not in RUNNERS:
        raise BuildError(f"Unknown runner '{runner}'; the agent has {', '.join(RUNNERS)}.")
    spec = BOARDS[board]
    root = firmware_root()
    agent = root / "agent"
    srcs = [agent / s for s in AGENT_SOURCES] + [agent / RUNNERS[runner]] + [Path(s) for s in sources]
    defs = {"EV_AGENT_MAX_PAYLOAD": spec.max_payload, **(defines or {})}
    if spec.cpu is None:
        srcs.append(root / "boards" / "host" / "board_host.c")
    else:
        srcs += [root / "boards" / "cmsdk" / "cmsdk_board.c", root / "boards" / "cmsdk" / "startup.c"]
        defs.update({"EV_BOARD_NAME": f'"{board}"', "EV_DEVICE": f'"{device}"', "EV_SYSCLK_HZ": spec.sysclk_hz})
    missing = [str(s) for s in srcs if not s.is_file()]
    if missing:
        raise BuildError(f"Cannot build the agent for {board}: source file(s) {', '.join(missing)} do not exist.")
    incs = [agent / "include", *(Path(d) for d in include_dirs)]
    if spec.cpu is not None:
        incs.append(root / "boards" / board)
    flags = [opt, *(f"-I{d}" for d in incs), *(f"-D{k}={v}" for k, v in defs.items())]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgevit-fw-", dir=output.parent) as scratch:
        objects = []
        for i, src in enumerate(srcs):
            obj = Path(scratch) / f"{i}-{src.stem}.o"
            if spec.cpu is None:
                compiler = (_tool("g++", "g++") if src.suffix == ".cpp" else _tool("gcc", "gcc"))
                std = ["-std=c++14", "-Wno-unused-variable", "-Wno-unused-but-set-variable"] \
                    if src.suffix == ".cpp" else ["-std=c99"]
                cmd = [compiler, *std, "-Wall", *flags, "-c", str(src), "-o", str(obj)]
            else:
                compiler = _tool("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
                cmd = [compiler, "-std=c99", "-Wall", f"-mcpu={spec.cpu}", "-mthumb", *spec.arch_flags,
                       "--specs=nano.specs", "-ffunction-sections", "-fdata-sections", *flags, "-c", str(src),
                       "-o", str(obj)]
            _run(cmd, f"{src.name} for {board}", timeout)
            objects.append(str(obj))
        tmp = Path(scratch) / "agent.out"
        if spec.cpu is None:
            link = [_tool("g++", "g++"), *objects, "-o", str(tmp)]
        else:
            link = [_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"), f"-mcpu={spec.cpu}",
                    "-mthumb", *spec.arch_flags, "--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles",
                    f"-L{root / 'boards' / 'cmsdk'}", f"-T{root / 'boards' / board / 'board.ld'}", "-Wl,--gc-sections",
                    *objects, "-o", str(tmp)]
        _run(link, f"the agent for {board}", timeout)
        os.replace(tmp, output)
    with contextlib.suppress(OSError):
        os.chmod(output, 0o755)
    return FirmwareBuild(spec, output, runner, device, [])


def build_selftest(output: str | Path, timeout: float = 300) -> Path:
    """The host program that checks the agent's CRC-16, CRC-32 and SHA-256 (firmware/agent/tests/selftest.c)."""
    agent = firmware_root() / "agent"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgevit-fw-", dir=output.parent) as scratch:
        tmp = Path(scratch) / "selftest"
        # ev_hex lives in agent.c, which needs a board: the selftest links the pure pieces and a local ev_hex.
        _run([_tool("gcc", "gcc"), "-std=c99", "-O2", "-Wall", f"-I{agent / 'include'}", "-DEV_SELFTEST_HEX",
              str(agent / "tests" / "selftest.c"), str(agent / "crc.c"), str(agent / "sha256.c"), "-o", str(tmp)],
             "the CRC/SHA-256 selftest", timeout)
        os.replace(tmp, output)
    return output
