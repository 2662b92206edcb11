"""The microcontroller target (edgevit/backends/mcu, firmware/kernels): int8 IR, arena planner, C that equals the
numpy reference bit for bit on this machine and on an emulated Cortex-M55.

One module fixture compiles shvit_micro for the Corstone-300 through the CLI (digits as calibration images) and
keeps what the backend built on the way (the PT2E graph, the IR); every integration/emulated test reads it.
shvit_micro is the zoo's micro ViT with the fewest op kinds (ReLU only: no GELU, no attention-bias gather, one
standardisation form), and still has attention (bmm, softmax), squeeze-excite (sigmoid, mul) and residual adds.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import yaml

from edgevit.backends.mcu import convert as mcu_convert
from edgevit.backends.mcu.ir import Layer, McuGraph, Tensor
from edgevit.backends.mcu.planner import check_fits, plan_arena
from edgevit.backends.mcu.reference import dequantize_output, quantize_input, requantize, run_reference
from edgevit.errors import DoesNotFitError

NEEDS_ARM = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="needs arm-none-eabi-gcc and qemu-system-arm (apt-get install gcc-arm-none-eabi "
                                      "libnewlib-arm-none-eabi qemu-system-arm)")


def _sqnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / max(((reference - test) ** 2).sum(), 1e-30)))


# --- pure Python: the integer primitives and the planner -------------------------------------------------------

@pytest.mark.unit
def test_multiplier_and_requantize_round_half_up():
    m, s = mcu_convert.quantize_multiplier(0.5)
    assert (m, s) == (2**30, 0)                      # 0.5 = 2^30 * 2^(0 - 31)
    assert requantize([3, -3, 5, -5, 4], m, s).tolist() == [2, -1, 3, -2, 2]   # x/2, halves go up (to +inf)
    m, s = mcu_convert.quantize_multiplier(3.0)
    assert m * 2.0 ** (s - 31) == 3.0 and requantize([7], m, s).tolist() == [21]
    m, s = mcu_convert.quantize_multiplier(0.1)
    assert abs(m * 2.0 ** (s - 31) - 0.1) < 1e-10 and 2**30 <= m < 2**31
    xs = np.arange(-5000, 5000)
    assert np.array_equal(requantize(xs, m, s), np.floor(xs * (m * 2.0 ** (s - 31)) + 0.5).astype(np.int64))
    assert mcu_convert.quantize_multiplier(0.0) == (0, 0)


@pytest.mark.unit
def test_permutations_collapse_to_the_4d_transpose_kernel():
    rng = np.random.default_rng(0)
    for shape, perm in (([2, 4, 2, 4, 32], [0, 2, 1, 3, 4]), ([1, 12, 4], [0, 2, 1]),
                        ([2, 3, 4, 5, 6, 7], [0, 3, 4, 1, 2, 5])):
        merged, merged_perm = mcu_convert._collapse(shape, perm)
        x = rng.integers(-128, 128, size=shape)
        assert len(merged) <= 4 and np.array_equal(x.transpose(perm).ravel(),
                                                   x.reshape(merged).transpose(merged_perm).ravel())


def _chain(sizes: list[int]) -> McuGraph:
    """input -> copy -> copy ... : tensor i+1 is written by layer i and read by layer i+1."""
    tensors = {i: Tensor(i, (1, n), 0.1, 0) for i, n in enumerate(sizes)}
    layers = [Layer(f"l{i}", "copy", [i], i + 1, {"size": sizes[i]}) for i in range(len(sizes) - 1)]
    return McuGraph("chain", tensors, layers, 0, len(sizes) - 1)


@pytest.mark.unit
def test_planner_reuses_dead_tensors_and_refuses_what_does_not_fit():
    plan = plan_arena(_chain([100, 1000, 300, 1000, 50]))
    # live pairs: (1000, 300), (300, 1000): the two 1000-byte tensors share offset 0, the 300 sits after them
    # at the next 16-byte boundary; the liveness bound is 1300, the plan 1008 + 300 aligned
    assert (plan.arena_bytes, plan.lower_bound_bytes) == (1312, 1300) and plan.overhead < 0.01
    assert plan.offsets[1] == plan.offsets[3] == 0 and plan.offsets[2] == 1008
    assert set(plan.offsets) == {1, 2, 3} and all(offset % 16 == 0 for offset in plan.offsets.values())
    for a in plan.offsets:
        for b in plan.offsets:
            if a < b and plan.lifetimes[a][1] >= plan.lifetimes[b][0]:
                assert plan.offsets[a] + plan.sizes[a] <= plan.offsets[b] or \
                    plan.offsets[b] + plan.sizes[b] <= plan.offsets[a], "live tensors overlap"
    with pytest.raises(DoesNotFitError) as e:
        check_fits(plan, None, "tiny-m0", sram_kb=1, flash_kb=64)
    assert "needs 1,312 bytes" in str(e.value) and "has 1,024 bytes" in str(e.value) and "288 bytes" in str(e.value)
    with pytest.raises(DoesNotFitError) as e:
        check_fits(plan, 300_000, "tiny-m0", sram_kb=4, flash_kb=256)
    assert "300,000 bytes" in str(e.value) and "262,144 bytes" in str(e.value) and "37,856 bytes" in str(e.value)


@pytest.mark.unit
def test_evm_is_deterministic_and_round_trips():
    graph = _chain([16, 32, 8])
    graph.layers[0].consts["table"] = np.arange(-128, 128, dtype=np.int8)
    data = graph.to_bytes()
    again = McuGraph.from_bytes(data)
    assert again.to_bytes() == data and np.array_equal(again.layers[0].consts["table"], graph.layers[0].consts["table"])
    with pytest.raises(Exception, match="Not an edgevit MCU model"):
        McuGraph.from_bytes(b"PK\x03\x04" + data[4:])


@pytest.mark.unit
def test_board_counts_become_profile_rows():
    from edgevit.backends import DeviceRun, get_backend

    backend = get_backend("mcu")
    assert backend.wire_format == 4 and backend.suffix == ".evm" and not backend.available()   # a board runs it
    run = DeviceRun(op_profile=[{"name": "stages.0.blocks.0.conv:depthwise_conv2d", "op": "depthwise_conv2d",
                                 "count": 1200, "counter_kind": "instructions"},
                                {"name": "head:fully_connected", "op": "fully_connected", "count": 700,
                                 "counter_kind": "instructions"}], times_ms=[1.0])
    parsed = backend.parse_profile(run, None, warmup=0)
    assert [(r["module"], r["op_type"], r["count"]) for r in parsed.rows] == [
        ("stages.0.blocks.0.conv", "depthwise_conv2d", 1200), ("head", "fully_connected", 700)]
    assert (parsed.extra["counter_kind"], parsed.extra["total_count"]) == ("instructions", 1900)
    assert "not milliseconds" in parsed.extra["op_timing"] and "not cycles" in parsed.notes[0]
    with pytest.raises(Exception, match="no per-layer counts"):
        backend.parse_profile(DeviceRun(), None, warmup=0)


# --- the converter refuses what the kernels lack ----------------------------------------------------------------

class _Cumsum(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


class _CumsumNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.mixer = _Cumsum()
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.mixer(self.stem(x)))


@pytest.mark.integration
def test_an_operator_without_a_kernel_is_named_with_its_place():
    from edgevit.backends.mcu.quantizer import mcu_int8_quantizer
    from edgevit.quantization import QuantRecipe, quantize_static

    model, example = _CumsumNet().eval(), torch.zeros(1, 3, 8, 8)
    recipe = QuantRecipe(bias_correction=False)
    quantized, _ = quantize_static(model, example, recipe, mcu_int8_quantizer(recipe), torch.randn(4, 3, 8, 8))
    with pytest.raises(mcu_convert.UnsupportedOpError) as e:
        mcu_convert.convert_pt2e(quantized, example, "cumsum-net")
    assert "aten.cumsum" in str(e.value) and "no kernel in the MCU library" in str(e.value)
    assert "at mixer (graph node cumsum)" in str(e.value)        # where: the module path and the node


# --- one compile of shvit_micro for the Corstone-300 ------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`edgevit compile shvit_micro --device corstone300 --calib DIGITS`, keeping the PT2E graph and IR it made."""
    from edgevit.cli import main
    from edgevit.data import digits, write_labelled_folder

    root = tmp_path_factory.mktemp("mcu")
    images, labels, classes = digits(64)
    calib = write_labelled_folder(root / "digits", images[:12], labels[:12], classes)
    seen = {}
    real_convert = mcu_convert.convert_pt2e

    def keep(quantized, example, name):          # the real converter; the test keeps its input and output
        seen["quantized"], seen["graph"] = quantized, real_convert(quantized, example, name)
        return seen["graph"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mcu_convert, "convert_pt2e", keep)
        assert main(["compile", "shvit_micro", "--device", "corstone300", "--calib", str(calib), "--num-calib", "8",
                     "--num-verify", "4", "-o", str(root / "out"), "--json"]) in (0, None)
    folder = root / "out" / "shvit_micro-corstone300"
    inputs = torch.from_numpy(images[8:12]).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])   # the family's preprocessing
    inputs = (inputs - mean[:, None, None]) / std[:, None, None]
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"folder": folder, "manifest": manifest, "inputs": inputs, **seen}


@pytest.mark.integration
def test_cli_compile_writes_the_c_model_and_records_arena_flash_and_layers(compiled):
    folder, manifest = compiled["folder"], compiled["manifest"]
    graph: McuGraph = compiled["graph"]
    assert {p.name for p in folder.iterdir()} >= {"model.evm", "model.c", "model.h", "edgevit_kernels.c",
                                                   "edgevit_kernels.h", "manifest.json", "report.md"}
    assert (folder / "model.evm").read_bytes() == graph.to_bytes()            # the artifact is the IR
    backend = manifest["backend"]
    assert backend["name"] == "mcu" and manifest["precision"] == "int8" and manifest["verification"]["passed"]
    assert backend["arena"]["arena_bytes"] <= 1.10 * backend["arena"]["liveness_lower_bound_bytes"]   # issue target
    assert [layer["op"] for layer in backend["layers"]] == [layer.op for layer in graph.layers]
    assert {"conv2d", "conv1x1", "depthwise_conv2d", "bmm", "softmax", "norm", "lut", "add", "mul", "mean",
            "fully_connected"} <= set(graph.ops())
    if shutil.which("arm-none-eabi-gcc"):
        flash = backend["flash"]
        assert flash["flash_bytes"] > graph.const_bytes and flash["bss"] >= backend["arena"]["arena_bytes"]
        firmware = backend["firmware"]          # the serial agent with this model linked in, for the board
        assert firmware["built"] and (folder / firmware["file"]).read_bytes()[:4] == b"\x7fELF"
        assert firmware["sections"]["flash_bytes"] > flash["flash_bytes"]
    header = (folder / "model.h").read_text()
    assert "int ev_model_run(const int8_t *input, int8_t *output, uint32_t *counts, ev_counter_fn counter);" in header
    source = (folder / "model.c").read_text()
    digest = ", ".join(f"0x{b:02x}" for b in bytes.fromhex(manifest["artifact"]["sha256"]))
    assert digest in source and source.count("if (counter)") == len(graph.layers)


@pytest.mark.integration
def test_numpy_reference_tracks_the_pt2e_graph(compiled):
    """(a) the integer reference against the fake-quant PT2E graph it was converted from, and against fp32."""
    from edgevit.models import prepare_model

    graph, quantized, x = compiled["graph"], compiled["quantized"], compiled["inputs"]
    fp32 = prepare_model("shvit_micro").reference
    with torch.no_grad():
        fake_quant = torch.cat([quantized(x[i:i + 1]) for i in range(len(x))]).numpy()
        reference_fp32 = fp32(x).numpy()
    ints = quantize_input(graph, x.numpy())
    ours = np.concatenate([dequantize_output(graph, run_reference(graph, ints[i:i + 1])) for i in range(len(x))])
    vs_pt2e, vs_fp32 = _sqnr(fake_quant, ours), _sqnr(reference_fp32, ours)
    print(f"SQNR int reference vs PT2E fake-quant {vs_pt2e:.1f} dB, vs fp32 {vs_fp32:.1f} dB "
          f"(PT2E vs fp32 {_sqnr(reference_fp32, fake_quant):.1f} dB)")
    assert vs_pt2e > 30 and vs_fp32 > 25
    assert (ours.argmax(1) == fake_quant.argmax(1)).mean() >= 0.75


@pytest.mark.integration
def test_host_c_equals_the_reference_bit_for_bit(compiled, tmp_path):
    """(b) model.c + the kernels built with gcc here give the reference's bytes, layer outputs included."""
    from edgevit.backends.mcu.toolchain import HostModel, build_host_library

    folder, graph = compiled["folder"], compiled["graph"]
    sources = {name: (folder / name).read_text() for name in ("model.c", "model.h")}
    host = HostModel(build_host_library(sources, tmp_path / "model.so"), graph.tensors[graph.input].size,
                     graph.tensors[graph.output].size, len(graph.layers))
    ints = quantize_input(graph, compiled["inputs"].numpy())
    rng = np.random.default_rng(0)
    cases = [*ints, rng.integers(-128, 128, size=ints[0].shape, dtype=np.int8),     # any int8 input
             np.full(ints[0].shape, -128, dtype=np.int8), np.full(ints[0].shape, 127, dtype=np.int8)]
    for x in cases:
        assert np.array_equal(host(x), run_reference(graph, x[None]).reshape(-1))


@pytest.mark.emulated
@NEEDS_ARM
@pytest.mark.parametrize("device", ["corstone300", "stm32h743"])
def test_the_board_build_under_qemu_equals_the_reference(compiled, tmp_path, device):
    """(c) the same C cross-compiled -O3 with the profile's flags (M55 with Helium; M7 with its FPU) runs under
    qemu-system-arm on the profile's machine (mps3-an547; mps2-an500) with semihosting and prints the
    reference's bytes."""
    from edgevit.backends.mcu.toolchain import CrossTarget, build_semihost_elf, run_qemu_semihost
    from edgevit.devices import get_device

    folder, graph = compiled["folder"], compiled["graph"]
    board = get_device(device).mcu
    sources = {name: (folder / name).read_text() for name in ("model.c", "model.h")}
    ints = quantize_input(graph, compiled["inputs"].numpy())[:3]
    elf = build_semihost_elf(sources, ints, graph.tensors[graph.output].size,
                             CrossTarget(tuple(board.gcc_flags), board.qemu_machine, f"{board.firmware_board}.ld"),
                             tmp_path / "model-test.elf")
    outputs = run_qemu_semihost(elf, board.qemu_machine, timeout=300)
    assert len(outputs) == len(ints)
    for x, y in zip(ints, outputs, strict=True):
        assert np.array_equal(y, run_reference(graph, x[None]).reshape(-1))
    if board.helium:   # the 1x1-conv / bmm inner loop went to Helium: 128-bit q-register int32 multiply and add
        listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True,
                                 check=True).stdout
        assert re.search(r"vmul\.i32\s+q\d", listing) and re.search(r"vadd\.i32\s+q\d", listing)


@pytest.mark.integration
def test_a_board_whose_sram_is_too_small_is_refused_by_how_much(compiled, tmp_path):
    """(d) the planner against a profile: needed vs available, in bytes."""
    from edgevit.backends.mcu.backend import lower_graph
    from edgevit.devices import get_device, load_profiles

    data = yaml.safe_load(get_device("stm32h743").model_dump_json())
    data.update(name="stm32-tiny", display_name="STM32H743 with a 4 KB arena")
    data["mcu"]["sram_kb"] = 4
    (tmp_path / "stm32-tiny.yaml").write_text(yaml.safe_dump(data))
    tiny = load_profiles([tmp_path])["stm32-tiny"]
    arena = compiled["manifest"]["backend"]["arena"]["arena_bytes"]
    with pytest.raises(DoesNotFitError) as e:
        lower_graph(compiled["graph"], tiny)
    assert f"needs {arena:,} bytes" in str(e.value) and "has 4,096 bytes" in str(e.value)
    assert f"{arena - 4096:,} bytes" in str(e.value) and "stm32-tiny" in str(e.value)


@pytest.mark.emulated
def test_the_flashed_board_profiles_over_serial_layer_by_layer(compiled, capsys):
    """The firmware compile built (the C serial agent with this model linked in) boots on QEMU's Corstone-300 (an547,
    Cortex-M55); `edgevit profile --via serial` skips the upload (the board holds the model), runs it and brings back
    one instruction count per layer and the output's sha256, equal to the numpy reference's on the agent's input."""
    from edgevit.cli import main
    from edgevit.firmware import QemuBoard

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm (apt: gcc-arm-none-eabi qemu-system-arm)")
    folder, graph = compiled["folder"], compiled["graph"]
    firmware = folder / compiled["manifest"]["backend"]["firmware"]["file"]
    with QemuBoard(firmware, "mps3-an547") as board:
        code = main(["profile", str(folder), "--via", "serial", "--port", board.port, "--runs", "2", "--warmup", "1",
                     "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["target"]["device_info"]["profile"] == "corstone300"
    assert report["target"]["link"]["upload"]["bytes_sent"] == 0          # flashed: nothing to send
    rows = report["ops"]
    assert [r["op_type"] for r in rows] == [layer.op for layer in graph.layers]
    assert all(r["count"] > 0 and r["counter_kind"] == "instructions" for r in rows)
    n = graph.tensors[graph.input].size
    x = ((np.arange(n) * 73 + 41) & 0xFF) - 128                             # the agent's deterministic input
    out = np.ascontiguousarray(run_reference(graph, x.astype(np.int8)), dtype=np.int8).tobytes()
    assert report["output_sha256"] == hashlib.sha256(out).hexdigest()
    assert report["counter_kind"] == "instructions" and report["total_count"] == sum(r["count"] for r in rows)
