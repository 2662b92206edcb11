"""The FPGA MoE-ViT accelerator: the HLS project built from m3vit_micro, its C-simulation (g++, real ap_types),
bit-identical to the fixed-point reference on every layer; cycle counts equal to the schedule model; the estimate;
and the bad inputs (does not fit, unknown task, mismatched weights, a format that overflows) refused with exit 2
and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.backends.hls.convert import convert_m3vit, patchify
from edgevit.backends.hls.csim import build_csim, compare, run_csim, write_sources
from edgevit.backends.hls.design import Design, parse_pe
from edgevit.backends.hls.fixed import FixedFormat, FixedOverflowError, quantize
from edgevit.backends.hls.reference import Formats, QuantizedWeights, dump_names, run_reference
from edgevit.backends.hls.schedule import schedule
from edgevit.backends.hls.writer import build_weight_image, config_header
from edgevit.cli import main
from edgevit.compile.fpga import FpgaOptions, compile_fpga, estimate_fpga
from edgevit.errors import DoesNotFitError, EdgevitError, VerificationError
from edgevit.manifest import read_artifact_folder
from edgevit.models import create_model

MICRO = "m3vit_micro"


def _graph(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(MICRO).eval()
    return model, convert_m3vit(model, MICRO)


# ------------------------------------------------------------------------------------------------------ unit
@pytest.mark.unit
def test_reference_tracks_fp32_and_routes_top_k():
    model, graph = _graph()
    x = torch.randn(2, 3, *model.img_size)
    with torch.no_grad():
        fp32 = model.forward_features(x).double().numpy()
    for i, patches in enumerate(patchify(x, 16)):
        run = run_reference(graph, patches, task=0)
        feats = run.features(Formats().act)
        cos = float((feats * fp32[i]).sum() / np.linalg.norm(feats) / np.linalg.norm(fp32[i]))
        assert cos > 0.9999
        assert [sum(c) for c in run.expert_tokens] == [graph.tokens * graph.top_k]   # every token, top-2
        gate = run.tensors["blocks.1.gate"]
        assert ((gate > 0).sum(axis=1) == graph.top_k).all()
        # the selected weights sum to one within the gate format's rounding
        assert np.abs(gate.sum(axis=1) - (1 << Formats().gate.frac)).max() <= graph.top_k


@pytest.mark.unit
def test_schedule_counts_every_useful_mac_once():
    model, graph = _graph()
    run = run_reference(graph, patchify(torch.randn(1, 3, *model.img_size), 16)[0])
    s = schedule(graph, Design(4, 16, 300, 256, 32), run.expert_tokens)
    from edgevit.models.m3vit import count_active_macs
    head = (graph.tokens - 1) * graph.dim * graph.tasks[0][1]
    gates = graph.tokens * graph.dim * graph.num_experts * len(graph.moe_blocks)
    assert s.macs == count_active_macs(model, run.expert_tokens) + head
    assert gates > 0
    # Overlap: never less than the compute, never more than compute + every load.
    compute = sum(st.compute for st in s.steps)
    assert compute <= s.total <= compute + sum(st.load for st in s.steps)


@pytest.mark.unit
def test_bad_design_and_format_inputs_are_named():
    with pytest.raises(EdgevitError, match="ROWSxCOLS"):
        parse_pe("8by16")
    model, graph = _graph()
    with pytest.raises(EdgevitError, match="Unknown task 'segm'.*semseg, depth"):
        graph.task_index("segm")
    narrow = Formats(act=FixedFormat(16, 2))           # |x| < 2: the residual stream does not fit
    run = run_reference(graph, patchify(torch.randn(1, 3, *model.img_size) * 4, 16)[0], formats=narrow)
    assert run.overflows
    name, report = next(iter(run.overflows.items()))
    assert "overflows format ap_fixed<16,2,AP_RND,AP_SAT>: saw [" in report.message(name)


# ------------------------------------------------------------------------------------------------- C-sim
@pytest.fixture(scope="module")
def micro_csim(tmp_path_factory):
    """The micro's project, built once: one weight image with every expert, a 4x16 PE array."""
    model, graph = _graph()
    formats, design = Formats(), Design(4, 16, 300, 256, 32)
    params = QuantizedWeights(graph, formats)
    masks = np.ones((len(graph.tasks), len(graph.moe_blocks), graph.num_experts), dtype=bool)
    image, offsets = build_weight_image(graph, params.raw, formats, design, masks)
    folder = tmp_path_factory.mktemp("micro_csim")
    write_sources(folder / "project", config_header(graph, formats, design, offsets))
    (folder / "weights.bin").write_bytes(image.data())
    exe = build_csim(folder / "project", folder / "tb")
    return model, graph, formats, design, params, folder, exe


@pytest.mark.integration
def test_csim_is_bit_exact_on_every_layer_for_both_tasks_and_counts_the_schedule(micro_csim):
    model, graph, formats, design, params, folder, exe = micro_csim
    x = torch.randn(3, 3, *model.img_size, generator=torch.Generator().manual_seed(3))
    patches = patchify(x, 16)
    for task in (0, 1):
        result = run_csim(exe, folder / "weights.bin", quantize(patches, formats.act), task, folder)
        for i in range(len(patches)):
            ref = run_reference(graph, patches[i], task, formats, params=params)
            assert compare(ref.tensors, result.tensors[i], dump_names(graph), i) == len(dump_names(graph))
            assert result.tensors[i]["head"].shape == (graph.tokens - 1, graph.tasks[task][1])
            routed = [c for c, b in zip(result.cycles[i]["expert_tokens"], graph.blocks) if b.moe]
            assert routed == ref.expert_tokens
            s = schedule(graph, design, ref.expert_tokens, task)
            assert result.cycles[i]["total"] == s.total
            assert result.cycles[i]["compute"] == {k: v["compute"] for k, v in s.by_kind().items()}


@pytest.mark.integration
def test_a_corrupted_weight_is_caught_at_the_first_layer_it_touches(micro_csim, tmp_path):
    model, graph, formats, design, params, folder, exe = micro_csim
    layout = json.loads(json.dumps(build_weight_image(graph, params.raw, formats, design,
                                                      np.ones((2, 1, graph.num_experts), bool))[0].tensors))
    data = bytearray((folder / "weights.bin").read_bytes())
    offset = layout["blocks.0.qkv.weight"]["word_offset"] * 32   # first 16-bit weight of the qkv tile
    data[offset] ^= 0x40
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    patches = patchify(torch.randn(1, 3, *model.img_size), 16)
    result = run_csim(exe, tmp_path / "weights.bin", quantize(patches, formats.act), 0, tmp_path)
    ref = run_reference(graph, patches[0], 0, formats, params=params)
    with pytest.raises(VerificationError, match="first at layer 'blocks.0.qkv'"):
        compare(ref.tensors, result.tensors[0], dump_names(graph))


# ---------------------------------------------------------------------------------------- compile / CLI
@pytest.mark.integration
def test_compile_writes_a_verified_project(tmp_path):
    assert main(["compile", MICRO, "--device", "zcu102", "-o", str(tmp_path), "--task", "depth", "--json"]) == 0
    out = tmp_path / f"{MICRO}-zcu102"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["identical"] and manifest["verification"]["layers_compared"] == 17
    assert min(manifest["verification"]["feature_cosine_vs_fp32"]) >= 0.999
    assert manifest["task"]["name"] == "depth"
    # The folder is an artifact `edgevit profile --via serial` takes (the host C agent serves it: firmware/).
    folder = read_artifact_folder(out)
    assert folder.manifest["backend"]["name"] == "hls" and folder.artifact.name == "weights.bin"
    assert folder.manifest["outputs"][0]["shape"] == [manifest["inputs"][0]["shape"][0] - 1, 1]   # depth: 1 map
    assert manifest["formats"]["act"]["type"] == "ap_fixed<24,10,AP_RND,AP_SAT>"
    assert manifest["formats_choice"].startswith("defaults")
    est = manifest["estimate"]
    assert est["fits"] and est["cycles"] >= est["floor_cycles"]
    offsets = json.loads((out / "weights.json").read_text())
    size = (out / "weights.bin").stat().st_size
    assert size % 32 == 0 and size == manifest["weight_image"]["bytes"]
    assert all(t["word_offset"] * 32 + t["bytes"] <= size for t in offsets["tensors"].values())
    for name in ("src/moe_vit_top.cpp", "src/moe_vit.h", "src/fixed_math.h", "src/edgevit_config.h",
                 "src/edgevit_tables.h", "tb/tb_moe_vit.cpp", "hls.tcl", "vivado.tcl"):
        assert (out / "project" / name).is_file(), name
    assert "set_part xczu9eg-ffvb1156-2-e" in (out / "project" / "hls.tcl").read_text()
    assert (out / "estimate.png").stat().st_size > 10_000 and "compute floor" in (out / "report.md").read_text()
    # Experts the task never selected on calibration data are not in its image (-1 in the config).
    kept = np.array(list(manifest["weight_image"]["experts_kept"].values()), dtype=bool)   # (tasks, moe, experts)
    header = (out / "project" / "src" / "edgevit_config.h").read_text()
    dense_cells = 1 * kept.shape[0] * kept.shape[2]             # the micro's dense block has no experts
    assert header.count("{-1, -1, -1, -1}") == dense_cells + int((~kept).sum())


@pytest.mark.integration
def test_pruned_experts_stay_bit_exact(tmp_path):
    """A task's image without the experts it never selected still matches the reference (which masks the same)."""
    opts = FpgaOptions(MICRO, "zcu102", output_root=tmp_path, num_calib=1, pe="2x16")
    out, manifest = compile_fpga(opts)
    kept = np.array(manifest["weight_image"]["experts_kept"]["semseg"])
    assert manifest["verification"]["identical"] and kept.sum() <= kept.size


@pytest.mark.integration
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    base = ["compile", MICRO, "-o", str(tmp_path)]
    assert main([*base, "--device", "kv260", "--pe", "32x128"]) == 2
    assert "does not fit xck26" in capsys.readouterr().err
    assert main([*base, "--device", "zcu102", "--task", "normals"]) == 2
    assert "Unknown task 'normals'" in capsys.readouterr().err
    other = tmp_path / "tiny_vit_micro.pth"
    torch.save(create_model("tiny_vit_micro").state_dict(), other)
    assert main([*base, "--device", "zcu102", "--weights", str(other)]) == 2
    assert capsys.readouterr().err.strip()
    assert main(["compile", "shvit_micro", "--device", "zcu102", "-o", str(tmp_path)]) == 2
    assert "M3ViT" in capsys.readouterr().err
    assert main([*base, "--device", "zcu102", "--fixed", "act=24"]) == 2
    assert "is not CLASS=WIDTH.INT_BITS" in capsys.readouterr().err
    assert main([*base, "--device", "zcu102", "--fixed", "acts=24.10"]) == 2
    assert "unknown tensor class 'acts'" in capsys.readouterr().err
    assert main([*base, "--device", "zcu102", "--fixed", "act=12.2"]) == 2
    assert "tensor input patches overflows format ap_fixed<12,2" in capsys.readouterr().err
    with pytest.raises(FixedOverflowError,
                       match=r"tensor input patches overflows format ap_fixed<12,2,AP_RND,AP_SAT>: saw \["):
        compile_fpga(FpgaOptions(MICRO, "zcu102", output_root=tmp_path, num_calib=1,
                                 formats=Formats(act=FixedFormat(12, 2))))
    assert main(["compile", MICRO, "--device", "pixel8", "--pe", "4x16", "-o", str(tmp_path)]) == 2
    assert not any(tmp_path.glob(f"{MICRO}-*")), "a failed compile left a folder behind"
    with pytest.raises(DoesNotFitError, match="above the 80%"):
        estimate_fpga(FpgaOptions(MICRO, "kv260", pe="32x128", num_calib=1))


@pytest.mark.integration
def test_estimate_picks_a_pe_array_that_fits_and_explains_its_cycles(capsys):
    assert main(["estimate", MICRO, "--device", "kv260", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["fits"] and est["pe_choice"].startswith("automatic")
    fitting = [c for c in est["candidates"] if c["fits"]]
    assert min(c["ms"] for c in fitting) >= est["ms"] / 1.02
    assert set(est["by_kind"]) == {"linear", "attention", "layernorm", "gate", "expert"}
    assert all(k["bound"] in ("compute", "DDR") for k in est["by_kind"].values())
    assert est["x_floor"] >= 1.0


@pytest.mark.integration
def test_the_wheel_carries_the_hls_sources_and_finds_them_installed(tmp_path):
    """What compile reads at run time (kernels, templates, FPGA board profiles) is inside the wheel, and an
    installed (unpacked) package finds its own copy, not the source checkout's."""
    import os
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("edgevit-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for name in ("edgevit/_hls/include/edgevit/moe_vit.h", "edgevit/_hls/include/edgevit/fixed_math.h",
                 "edgevit/_hls/templates/moe_vit_top.cpp", "edgevit/_hls/templates/tb_moe_vit.cpp",
                 "edgevit/_profiles/zcu102.yaml"):
        assert name in names, name
    probe = ("from edgevit.backends.hls.toolchain import hls_root; from edgevit.devices import get_device; "
             "print(hls_root()); print(get_device('kv260').fpga.part)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    root, part = done.stdout.split()[-2:]
    assert root == str(tmp_path / "site" / "edgevit" / "_hls") and part.startswith("xck26")
