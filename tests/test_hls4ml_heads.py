"""The M3ViT task heads through hls4ml (edgevit/backends/hls/hls4ml_heads.py): hls4ml's C-simulation of the head
is bit-exact with edgevit's fixed-point reference (``run_reference(...).tensors["head"]``) on m3vit_micro, by both
routes (Brevitas QuantLinear with power-of-two scales -> QONNX -> hls4ml, and hls4ml's PyTorch frontend), and on
inputs built to hit the act format's saturation and exact rounding ties (AP_RND: half up, not QONNX's half-even).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgevit.backends.hls.convert import convert_m3vit, patchify
from edgevit.backends.hls.fixed import quantize, requantize
from edgevit.backends.hls.hls4ml_heads import Hls4mlHeadError, convert_head, exact_accum_format
from edgevit.backends.hls.reference import Formats, QuantizedWeights, run_reference
from edgevit.models import create_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MICRO = "m3vit_micro"


@pytest.fixture(scope="module")
def micro():
    """m3vit_micro, its graph, and the reference runs of 2 images for both tasks."""
    torch.manual_seed(0)
    model = create_model(MICRO).eval()
    graph = convert_m3vit(model, MICRO)
    images = torch.randn(2, 3, *model.img_size, generator=torch.Generator().manual_seed(1))
    patches = patchify(images, graph.patch_size)
    formats = Formats()
    params = QuantizedWeights(graph, formats)
    runs = {(task, i): run_reference(graph, patches[i], task, formats, params=params)
            for task in range(len(graph.tasks)) for i in range(len(patches))}
    return graph, formats, params, runs


@pytest.fixture(scope="module")
def qonnx_heads(micro, tmp_path_factory):
    graph, formats, _, _ = micro
    folder = tmp_path_factory.mktemp("hls4ml_heads")
    return [convert_head(graph, task, formats, folder / f"qonnx_head{task}", route="qonnx").compile()
            for task in range(len(graph.tasks))]


def _edgevit_linear(x_raw, params, task, formats):
    """edgevit's head on any raw rows: exact x @ W + bias, one AP_RND + AP_SAT to the act format."""
    a, w, b = formats.act, formats.weight, formats.bias
    acc = x_raw @ params.raw[f"head.{task}.weight"] + (params.raw[f"head.{task}.bias"] << (a.frac + w.frac - b.frac))
    return requantize(acc, a.frac + w.frac, a)


def test_heads_via_brevitas_qonnx_are_bit_exact_with_edgevit_on_two_images(micro, qonnx_heads):
    graph, formats, _, runs = micro
    for head in qonnx_heads:
        assert head.route == "qonnx"
        # hls4ml's types are edgevit's formats (weights and bias keep QONNX's half-even rounding mode, moot: they
        # arrive on their grids), the accumulator is exact, the result rounds half up and saturates.
        assert head.precisions["input"].startswith("ap_fixed<24,10,AP_RND,AP_SAT")
        assert head.precisions["weight"].startswith("ap_fixed<16,2,")
        assert head.precisions["bias"].startswith("ap_fixed<32,12,")
        assert head.precisions["accum"].startswith("ap_fixed<46,18")
        assert head.precisions["result"].startswith("ap_fixed<24,10,AP_RND,AP_SAT")
        assert (head.folder / "head.qonnx.onnx").is_file() and (head.folder / "build_prj.tcl").is_file()
        for i in range(2):
            run = runs[(head.task, i)]
            out = head.predict(run.tensors["norm"])
            assert out.shape == run.tensors["head"].shape == (graph.tokens - 1, graph.tasks[head.task][1])
            assert np.array_equal(out, run.tensors["head"])          # max |difference| = 0 LSB


def test_head_via_pytorch_frontend_is_bit_exact_too(micro, tmp_path):
    graph, formats, _, runs = micro
    head = convert_head(graph, "semseg", formats, tmp_path / "head", route="pytorch").compile()
    assert head.route == "pytorch" and head.task == 0
    assert head.precisions["accum"].startswith(f"ap_fixed<{exact_accum_format(formats, graph.dim).width},")
    for i in range(2):
        run = runs[(0, i)]
        assert np.array_equal(head.predict(run.tensors["norm"]), run.tensors["head"])


def test_qonnx_head_rounds_ties_half_up_and_saturates_like_edgevit(micro, tmp_path):
    """Rows built so that some outputs sit exactly half an LSB between two act values (where QONNX's half-even
    rounding would differ), plus rows at the act format's limits. The micro's head weights are too small for any
    act-format input to saturate the result (max 300 of 512), so this head's weights are scaled by 8."""
    graph, formats, _, _ = micro
    a, w, b = formats.act, formats.weight, formats.bias
    task = 0
    graph = dataclasses.replace(graph, weights={**graph.weights, "head.0.weight": graph.weights["head.0.weight"] * 8})
    params = QuantizedWeights(graph, formats)
    head = convert_head(graph, task, formats, tmp_path / "head", route="qonnx").compile()
    weight, bias = params.raw[f"head.{task}.weight"], params.raw[f"head.{task}.bias"] << (a.frac + w.frac - b.frac)
    shift = w.frac                                                   # acc (Fa + Fw) -> act (Fa)
    half = 1 << (shift - 1)
    rows = []
    for j, k in list(zip(*np.nonzero(weight % 2)))[:8]:              # an odd weight is invertible mod 2^shift
        m = 1 << shift
        x = ((half - int(bias[k])) * pow(int(weight[j, k]), -1, m)) % m   # x * w + b = half (mod 2^shift)
        for sign in (1, -1):
            row = np.zeros(graph.dim, dtype=np.int64)
            row[j] = x if sign > 0 else x - m                        # both = x (mod 2^shift)
            rows.append(row)
    rng = np.random.default_rng(0)
    rows += [np.where(weight[:, k] >= 0, a.raw_max, a.raw_min) for k in range(4)]      # saturate high
    rows += [np.where(weight[:, k] >= 0, a.raw_min, a.raw_max) for k in range(4)]      # saturate low
    rows += list(quantize(rng.normal(0, 4, size=(8, graph.dim)), a))
    x = np.stack(rows).astype(np.int64)
    acc = x @ weight + bias
    tie = (acc & ((1 << shift) - 1)) == half
    assert tie.sum() >= 16 and (tie & ((acc >> shift) % 2 == 0)).any()     # where half-even would round down
    expected = _edgevit_linear(x, params, task, formats)
    assert (expected == a.raw_max).any() and (expected == a.raw_min).any()
    assert np.array_equal(head.predict(x, class_token=False), expected)


def test_bad_inputs_are_reported(micro, qonnx_heads):
    graph, formats, _, _ = micro
    with pytest.raises(Hls4mlHeadError, match="takes \\(tokens, 32\\)"):
        qonnx_heads[0].predict(np.zeros((3, 7), dtype=np.int64))
    with pytest.raises(Hls4mlHeadError, match="Unknown hls4ml route"):
        convert_head(graph, 0, formats, "unused", route="vivado")


def test_compile_builds_the_heads_with_hls4ml(tmp_path):
    """`edgevit compile ... --hls4ml-heads`: every task head through hls4ml, bit-exact, in the project."""
    import json

    from edgevit.cli import main

    assert main(["compile", "m3vit_micro", "--device", "zcu102", "-o", str(tmp_path), "--hls4ml-heads", "--json"]) == 0
    out = tmp_path / "m3vit_micro-zcu102"
    heads = json.loads((out / "manifest.json").read_text())["hls4ml_heads"]
    assert set(heads["tasks"]) == {"semseg", "depth"}
    assert all(t["max_lsb_difference"] == 0 for t in heads["tasks"].values())
    assert (out / "project" / "hls4ml_heads" / "semseg").is_dir()
