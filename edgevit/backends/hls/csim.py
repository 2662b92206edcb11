"""C-simulation: build the generated project's testbench with g++, run it, read back every layer.

The testbench (hls/templates/tb_moe_vit.cpp) writes each dumped tensor as raw integers and the schedule's
cycle counters; :func:`compare` holds them against the fixed-point reference and names the first tensor
that differs.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import EdgevitError, VerificationError
from .mathfn import write_tables_header
from .toolchain import ap_types_include, build, hls_root

__all__ = ["CsimResult", "write_sources", "build_csim", "run_csim", "compare", "KINDS"]

KINDS = ("linear", "attention", "layernorm", "gate", "expert")
SOURCE_HEADERS = ("fixed_math.h", "moe_vit.h")
TOP = "moe_vit_top.cpp"
TESTBENCH = "tb_moe_vit.cpp"


@dataclass
class CsimResult:
    tensors: list[dict[str, np.ndarray]]            # per image: name -> raw values
    cycles: list[dict] = field(default_factory=list)  # per image: total, compute/stall per kind, expert tokens


def write_sources(folder: Path, config_header: str) -> list[Path]:
    """The HLS sources of one build: kernels (copied), tables and configuration (generated), top, testbench."""
    src = folder / "src"
    tb = folder / "tb"
    src.mkdir(parents=True, exist_ok=True)
    tb.mkdir(parents=True, exist_ok=True)
    root = hls_root()
    for name in SOURCE_HEADERS:
        shutil.copyfile(root / "include" / "edgevit" / name, src / name)
    shutil.copyfile(root / "templates" / TOP, src / TOP)
    shutil.copyfile(root / "templates" / TESTBENCH, tb / TESTBENCH)
    write_tables_header(src)
    (src / "edgevit_config.h").write_text(config_header)
    return [src / TOP, tb / TESTBENCH]


def build_csim(folder: Path, output: Path, opt: str = "-O1") -> Path:
    """g++ the testbench + top of the project in ``folder`` into ``output``."""
    return build([folder / "src" / TOP, folder / "tb" / TESTBENCH], output,
                 include_dirs=[folder / "src", ap_types_include()], opt=opt,
                 extra_flags=["-Wno-unused-variable", "-Wno-unused-but-set-variable"])


def run_csim(executable: Path, weights: Path, inputs: np.ndarray, task: int, workdir: Path,
             timeout: float = 3600) -> CsimResult:
    """Run the testbench on ``inputs`` (images, tokens, patch_dim raw int64)."""
    inputs_path, dumps_path, stats_path = workdir / "inputs.bin", workdir / "dumps.bin", workdir / "stats.txt"
    np.ascontiguousarray(inputs, dtype="<i8").tofile(inputs_path)
    done = subprocess.run([str(executable), str(weights), str(inputs_path), str(inputs.shape[0]), str(task),
                           str(dumps_path), str(stats_path)], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise EdgevitError(f"The C-simulation testbench failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-800:]}")
    return CsimResult(_read_dumps(dumps_path.read_bytes(), inputs.shape[0]), _read_stats(stats_path.read_text()))


def _read_dumps(data: bytes, images: int) -> list[dict[str, np.ndarray]]:
    out: list[dict[str, np.ndarray]] = [{} for _ in range(images)]
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<i", data, pos)
        pos += 4
        name = data[pos:pos + length].decode()
        pos += length
        image, index, rows, cols = struct.unpack_from("<4i", data, pos)
        pos += 16
        values = np.frombuffer(data, dtype="<i8", count=rows * cols, offset=pos).reshape(rows, cols)
        pos += 8 * rows * cols
        out[image][f"blocks.{index}.{name}" if index >= 0 else name] = values.astype(np.int64)
    return out


def _read_stats(text: str) -> list[dict]:
    images: list[dict] = []
    for line in text.splitlines():
        parts = line.split()
        if parts[0] == "image":
            images.append({"total": int(parts[3]), "compute": {}, "stall": {}, "expert_tokens": []})
        elif parts[0] == "kind":
            images[-1]["compute"][parts[1]] = int(parts[2])
            images[-1]["stall"][parts[1]] = int(parts[3])
        elif parts[0] == "experts":
            images[-1]["expert_tokens"].append([int(v) for v in parts[2:]])
    return images


def compare(reference: dict[str, np.ndarray], csim: dict[str, np.ndarray], order: list[str], image: int = 0) -> int:
    """Every tensor in ``order`` must be identical; returns how many were compared. Raises on the first that
    differs, naming it, where, and by how many LSBs."""
    for name in order:
        if name not in csim:
            raise VerificationError(f"C-simulation of image {image} wrote no tensor '{name}' (it wrote "
                                    f"{', '.join(list(csim)[:8])}...): the testbench and the reference disagree on "
                                    "the layer sequence.")
        ref, got = reference[name], csim[name]
        if ref.shape != got.shape:
            raise VerificationError(f"Image {image}, layer '{name}': C-simulation shape {got.shape} vs reference "
                                    f"{ref.shape}.")
        diff = np.flatnonzero(ref.reshape(-1) != got.reshape(-1))
        if diff.size:
            where = np.unravel_index(diff[0], ref.shape)
            raise VerificationError(
                f"C-simulation differs from the fixed-point reference first at layer '{name}' (image {image}): "
                f"{diff.size} of {ref.size} values, first at {tuple(int(v) for v in where)}: C-sim raw "
                f"{int(got[where])} vs reference {int(ref[where])}; max difference "
                f"{int(np.abs(ref.reshape(-1)[diff] - got.reshape(-1)[diff]).max())} LSB.")
    return len(order)
