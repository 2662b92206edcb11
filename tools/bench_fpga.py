"""FPGA MoE-ViT benchmark: formats vs fp32, C-simulation bit-exactness and time, the latency estimate vs its floor.

    python tools/bench_fpga.py [--model m3vit_tiny] [--device zcu102] [--images 2] [--skip-csim]

1. Fixed-point formats (the defaults' justification): cosine of the final features and max |error| vs fp32
   for candidate activation / weight widths, on the same images, with any saturation named.
2. C-simulation of the generated project (g++, hls4ml's ap_types): every dumped layer compared with the
   fixed-point reference, the cycle counters compared with the schedule model; build and run seconds.
3. The estimate on the board: automatic PE choice and Edge-MoE's 256-MAC array (4x64), cycles by layer kind,
   x the MAC-array compute floor (active experts' MACs only).
Weights are the zoo's synthetic init (no M3ViT checkpoint can be downloaded here); images are synthetic 1/f noise.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgevit.backends.hls.convert import convert_m3vit, patchify
from edgevit.backends.hls.csim import build_csim, compare, run_csim, write_sources
from edgevit.backends.hls.fixed import FixedFormat, quantize
from edgevit.backends.hls.reference import Formats, QuantizedWeights, dump_names, run_reference
from edgevit.backends.hls.schedule import schedule
from edgevit.backends.hls.writer import build_weight_image, config_header
from edgevit.compile.fpga import FpgaOptions, estimate_fpga, plan_fpga
from edgevit.data import Preprocess, synthetic_images
from edgevit.models import create_model, get_model_spec

CANDIDATES = [("act", FixedFormat(16, 6)), ("act", FixedFormat(20, 8)), ("act", FixedFormat(24, 8)),
              ("act", FixedFormat(24, 10)), ("act", FixedFormat(24, 12)), ("weight", FixedFormat(12, 2)),
              ("weight", FixedFormat(16, 2)), ("weight", FixedFormat(18, 2))]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def formats_table(model, graph, images: torch.Tensor) -> list[dict]:
    with torch.no_grad():
        fp32 = model.forward_features(images).double().numpy()
    patches = patchify(images, graph.patch_size)
    rows = []
    for kind, fmt in CANDIDATES:
        formats = Formats(**{kind: fmt})
        cos, err, sat = [], [], set()
        for i, p in enumerate(patches):
            run = run_reference(graph, p, 0, formats)
            feats = run.features(formats.act)
            cos.append(_cos(feats, fp32[i]))
            err.append(float(np.abs(feats - fp32[i]).max()))
            sat |= set(run.overflows)
        rows.append({"class": kind, "format": str(fmt), "min_cosine": min(cos), "max_abs_error": max(err),
                     "saturated": sorted(sat)[:3], "default": fmt == getattr(Formats(), kind)})
    return rows


def csim_check(model, graph, images: torch.Tensor, design) -> dict:
    formats = Formats()
    params = QuantizedWeights(graph, formats)
    masks = np.ones((len(graph.tasks), len(graph.moe_blocks), graph.num_experts), dtype=bool)
    image, offsets = build_weight_image(graph, params.raw, formats, design, masks)
    patches = patchify(images, graph.patch_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sources(tmp / "project", config_header(graph, formats, design, offsets))
        (tmp / "weights.bin").write_bytes(image.data())
        t0 = time.perf_counter()
        exe = build_csim(tmp / "project", tmp / "tb")
        t1 = time.perf_counter()
        result = run_csim(exe, tmp / "weights.bin", quantize(patches, formats.act), 0, tmp)
        t2 = time.perf_counter()
    layers, cycles_equal = 0, True
    for i, p in enumerate(patches):
        ref = run_reference(graph, p, 0, formats, params=params)
        layers = compare(ref.tensors, result.tensors[i], dump_names(graph), i)
        cycles_equal &= result.cycles[i]["total"] == schedule(graph, design, ref.expert_tokens).total
    return {"images": len(patches), "layers_identical": layers, "cycles_equal_schedule": cycles_equal,
            "build_s": round(t1 - t0, 1), "run_s_per_image": round((t2 - t1) / len(patches), 1),
            "cycles": [r["total"] for r in result.cycles]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="m3vit_tiny")
    ap.add_argument("--device", default="zcu102")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--skip-csim", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    graph = convert_m3vit(model, args.model)
    spec = get_model_spec(args.model)
    images = synthetic_images(Preprocess.from_dict(spec.preprocessing()), args.images, seed=1).inputs
    out: dict = {"model": args.model, "device": args.device}

    print(f"== fixed-point formats vs fp32 ({args.model}, {args.images} images, final features)")
    out["formats"] = formats_table(model, graph, images)
    print(f"{'class':7} {'format':32} {'min cosine':>11} {'max |err|':>10}  saturated")
    for r in out["formats"]:
        print(f"{r['class']:7} {r['format']:32} {r['min_cosine']:11.6f} {r['max_abs_error']:10.4g}  "
              f"{', '.join(r['saturated']) or '-'}{'   (default)' if r['default'] else ''}")

    print(f"\n== estimate on {args.device}")
    out["estimate"] = {}
    for pe in (None, "4x64"):
        est = estimate_fpga(FpgaOptions(args.model, args.device, pe=pe, num_calib=2))
        out["estimate"][pe or "auto"] = {k: est[k] for k in ("pe", "ms", "floor_ms", "x_floor", "cycles",
                                                             "utilisation", "fits")}
        out["estimate"][pe or "auto"]["by_kind"] = {k: {"ms": round(v["ms"], 3), "bound": v["bound"]}
                                                    for k, v in est["by_kind"].items()}
        print(f"PE {est['pe']:6} ({'automatic' if pe is None else 'given'}): {est['ms']:.3f} ms, floor "
              f"{est['floor_ms']:.3f} ms ({est['active_macs'] / 1e6:.1f} M active MACs) -> {est['x_floor']:.3f}x; "
              f"DSP {est['utilisation']['dsp']:.0%} BRAM {est['utilisation']['bram36']:.0%}")
        print("   " + "; ".join(f"{k} {v['ms']:.2f} ms ({v['bound']})" for k, v in est["by_kind"].items()))

    if not args.skip_csim:
        design = plan_fpga(FpgaOptions(args.model, args.device, num_calib=1)).design
        print(f"\n== C-simulation ({design.pe} PE, {args.images} images)")
        out["csim"] = csim_check(model, graph, images, design)
        c = out["csim"]
        print(f"every layer identical to the reference: {c['layers_identical']} layers x {c['images']} images; "
              f"cycles equal the schedule model: {c['cycles_equal_schedule']}; build {c['build_s']} s, "
              f"run {c['run_s_per_image']} s/image")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
