"""Where the HLS C++ lives and how it is compiled for C-simulation here (g++ against hls4ml's ap_types headers).

C-simulation needs no Vitis: ``ap_fixed``/``ap_int`` are plain C++ headers, and hls4ml 1.3.0 ships them. The
kernels, templates and ``fixed_math.h`` live at the repo root in ``hls/`` (data for the generator, like
``profiles/``); a wheel carries them inside the package as ``edgevit/_hls``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import EdgevitError
from ...firmware.build import run_tool

__all__ = ["ToolchainError", "BuildError", "hls_root", "ap_types_include", "gxx_version", "build"]

_HLS4ML_FIX = "pip install hls4ml==1.3.0"


class ToolchainError(EdgevitError):
    """A missing or unusable C++ toolchain piece (g++, hls4ml's ap_types headers)."""


class BuildError(ToolchainError):
    """g++ rejected a generated or shipped HLS source."""


def hls_root() -> Path:
    """The HLS sources: ``edgevit/_hls`` in a wheel, else ``hls/`` at the root of a source checkout."""
    package = Path(__file__).resolve().parents[2]           # .../edgevit
    packaged = package / "_hls"
    return packaged if packaged.is_dir() else package.parent / "hls"


@functools.lru_cache(maxsize=1)
def ap_types_include() -> Path:
    """The folder holding ``ap_fixed.h`` from the installed hls4ml (found without importing hls4ml, which is slow)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"hls4ml is not installed; the HLS C-simulation compiles against the ap_types headers "
                             f"it ships. Install it: `{_HLS4ML_FIX}`.")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "templates" / "vivado" / "ap_types"
        if (folder / "ap_fixed.h").is_file():
            return folder
    raise ToolchainError(f"The installed hls4ml ({', '.join(spec.submodule_search_locations)}) has no "
                         f"templates/vivado/ap_types/ap_fixed.h; edgevit needs the layout of hls4ml 1.3.0: "
                         f"`{_HLS4ML_FIX}`.")


def _gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        raise ToolchainError("g++ is not on PATH; the HLS C-simulation builds with it. Install it (Debian/Ubuntu: "
                             "`sudo apt-get install g++`).")
    return gxx


@functools.lru_cache(maxsize=1)
def gxx_version() -> str:
    """The g++ version (``12.2.0``)."""
    done = subprocess.run([_gxx(), "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, timeout=60,
                          check=False)
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        raise ToolchainError(f"`g++ -dumpfullversion` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}; "
                             "check the g++ installation.")
    return version


def build(sources: Sequence[str | Path], output: str | Path, include_dirs: Iterable[str | Path],
          extra_flags: Sequence[str] = (), opt: str = "-O2", timeout: float = 900) -> Path:
    """Compile and link ``sources`` into the executable ``output`` with ``g++ -std=c++14``; returns ``output``.

    The binary is linked to a temporary name beside ``output`` and renamed, so a failed or interrupted build never
    leaves a stale executable that looks current. One g++ process (single-threaded), as the machine is shared.
    """
    output = Path(output)
    sources = [Path(s) for s in sources]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise BuildError(f"Cannot build {output.name}: source file(s) {', '.join(missing)} do not exist.")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    cmd = [_gxx(), "-std=c++14", opt, *extra_flags, *(f"-I{d}" for d in include_dirs), *map(str, sources), "-o", tmp]
    try:
        run_tool(cmd, f"g++ building {output.name}", timeout, BuildError)
        os.chmod(tmp, 0o755 & ~_umask())
        os.replace(tmp, output)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return output


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
