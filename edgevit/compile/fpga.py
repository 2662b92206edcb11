"""``edgevit compile`` / ``edgevit estimate`` for FPGA boards: an M3ViT -> an HLS accelerator project.

model -> weights -> graph (edgevit.backends.hls.convert) -> calibration through the fixed-point reference
(overflow check, expert routing per task, experts a task never selects left out of its image) -> design
(PE array given or picked for the board, resources checked) -> project (kernels, generated config, weight
image + offsets, testbench, Vitis HLS / Vivado Tcl) -> verify (g++ C-simulation, every layer identical to
the reference; final features vs fp32) -> manifest, report, estimate table + PNG, written atomically.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_directory, atomic_write_json, atomic_write_text, ensure_writable_dir
from ..backends.hls.convert import MoeVitGraph, convert_m3vit, patchify
from ..backends.hls.csim import build_csim, compare, run_csim, write_sources
from ..backends.hls.design import Design, parse_pe
from ..backends.hls.fixed import FixedOverflowError, quantize
from ..backends.hls.reference import Formats, QuantizedWeights, dump_names, run_reference
from ..backends.hls.resources import UTILISATION_LIMIT, Resources, estimate_resources
from ..backends.hls.schedule import KINDS, schedule
from ..backends.hls.toolchain import gxx_version
from ..backends.hls.writer import build_weight_image, config_header
from ..data import Preprocess, load_image_folder, synthetic_images
from ..devices import DeviceProfile, get_device
from ..errors import DoesNotFitError, EdgevitError, VerificationError
from ..models import prepare_model
from ..progress import SilentProgress, StageProgress

__all__ = ["FpgaOptions", "FpgaPlan", "plan_fpga", "compile_fpga", "estimate_fpga", "PE_CANDIDATES",
           "FPGA_MANIFEST_VERSION"]

FPGA_MANIFEST_VERSION = 1
# PE arrays the automatic choice considers: rows (tokens) x columns (outputs); columns a multiple of 16 so a
# row of 16-bit weights fills whole 256-bit AXI words.
PE_CANDIDATES = [(r, c) for r in (1, 2, 4, 8, 16, 32) for c in (16, 32, 64, 128) if 64 <= r * c <= 2048]
MIN_FEATURE_COSINE = 0.999


@dataclass
class FpgaOptions:
    model: str
    device: str
    weights: Path | None = None
    task: str | None = None                 # None: the model's first task
    pe: str | None = None                   # "ROWSxCOLS"; None: picked for the board
    calib: Path | None = None
    num_calib: int = 8                      # images through the reference: overflow check + expert routing
    num_verify: int = 1                     # images through C-simulation
    output_root: Path = Path("out")
    profile_dirs: list[Path] = field(default_factory=list)
    formats: Formats = field(default_factory=Formats)
    prune_experts: bool = True
    hls4ml_heads: bool = False              # also build every task head with hls4ml (QONNX route), verified


@dataclass
class FpgaPlan:
    """Everything decided before the project is written."""

    profile: DeviceProfile
    model: torch.nn.Module
    name: str
    weights: dict
    graph: MoeVitGraph
    task: int
    params: QuantizedWeights
    preprocess: Preprocess
    calibration: torch.Tensor
    calibration_source: str
    expert_masks: np.ndarray                # (tasks, moe layers, experts)
    routing: list[list[list[int]]]          # this task, per calibration image: [moe layer][expert] tokens
    design: Design
    resources: Resources
    estimate: dict
    candidates: list[dict]


def _board(profile: DeviceProfile):
    if profile.kind != "fpga" or profile.fpga is None:
        raise EdgevitError(f"Device '{profile.name}' is a {profile.kind}, not an FPGA board; the HLS accelerator "
                           "targets boards of kind fpga (zcu102, zcu104, kv260; see `edgevit devices`).")
    if profile.fpga.axi is None or profile.fpga.ddr is None or "hls" not in profile.compile.backends:
        raise EdgevitError(f"Board '{profile.name}' ({profile.fpga.part}) has no processor system with DDR for the "
                           "HLS accelerator to stream weights from; build the open-flow linear unit for it with "
                           f"`edgevit rtl build --device {profile.name}`, or pick zcu102, zcu104 or kv260.")
    return profile.fpga


def ddr_bytes_per_cycle(board) -> int:
    """Weight bandwidth per accelerator cycle: every AXI port but one (activations) streams weights, capped by the
    DDR's peak."""
    axi = max(board.axi.ports - 1, 1) * board.axi.data_bits // 8
    ddr = board.ddr.gbps * 1e9 / (board.clock_mhz * 1e6)
    return max(1, int(min(axi, ddr)))


def _design(board, rows: int, cols: int) -> Design:
    return Design(pe_rows=rows, pe_cols=cols, clock_mhz=board.clock_mhz, axi_bits=256,
                  ddr_bytes_per_cycle=ddr_bytes_per_cycle(board))


def _estimate(graph: MoeVitGraph, design: Design, routing: list[list[list[int]]], task: int,
              resources: Resources, board) -> dict:
    """Cycles (averaged over the calibration images' routing), compute floor, breakdown, resources."""
    runs = [schedule(graph, design, r, task) for r in routing]
    total = float(np.mean([s.total for s in runs]))
    macs = float(np.mean([s.macs for s in runs]))
    floor = macs / design.macs
    kinds = {}
    for kind in KINDS:
        rows = [s.by_kind()[kind] for s in runs]
        compute = float(np.mean([r["compute"] for r in rows]))
        stall = float(np.mean([r["stall"] for r in rows]))
        kmacs = float(np.mean([r["macs"] for r in rows]))
        kinds[kind] = {"cycles": compute + stall, "compute_cycles": compute, "ddr_stall_cycles": stall,
                       "macs": kmacs, "floor_cycles": kmacs / design.macs,
                       "ms": (compute + stall) / (design.clock_mhz * 1e3),
                       "bound": "DDR" if stall > 0.1 * compute else "compute"}
    return {"cycles": total, "ms": total / (design.clock_mhz * 1e3), "active_macs": macs,
            "floor_cycles": floor, "floor_ms": floor / (design.clock_mhz * 1e3), "x_floor": total / floor,
            "clock_mhz": design.clock_mhz, "pe": design.pe, "by_kind": kinds,
            "resources": resources.as_dict(),
            "utilisation": {k: round(v, 4) for k, v in resources.utilisation(board).items()},
            "fits": not resources.over_limit(board), "utilisation_limit": UTILISATION_LIMIT,
            "basis": "cycles from the accelerator's schedule (the same counts C-simulation makes), routing from "
                     f"{len(routing)} calibration image(s); resources from a model of the kernels' buffers"}


def _pick_design(graph: MoeVitGraph, formats: Formats, board, routing, task: int, pe: str | None
                 ) -> tuple[Design, Resources, dict, list[dict]]:
    if pe is not None:
        design = _design(board, *parse_pe(pe))
        resources = estimate_resources(graph, formats, design, board)
        over = resources.over_limit(board)
        if over:
            raise DoesNotFitError(_not_fit_message(design, over, board))
        return design, resources, _estimate(graph, design, routing, task, resources, board), []
    candidates = []
    for rows, cols in PE_CANDIDATES:
        design = _design(board, rows, cols)
        resources = estimate_resources(graph, formats, design, board)
        fits = not resources.over_limit(board)
        est = _estimate(graph, design, routing, task, resources, board) if fits else None
        candidates.append({"pe": design.pe, "fits": fits, "dsp": resources.dsp, "bram36": resources.bram36,
                           "uram": resources.uram, "lut": resources.lut,
                           "ms": est["ms"] if est else None, "x_floor": est["x_floor"] if est else None,
                           "_design": design, "_resources": resources, "_est": est})
    fitting = [c for c in candidates if c["fits"]]
    if not fitting:
        smallest = min(candidates, key=lambda c: c["dsp"])
        raise DoesNotFitError(_not_fit_message(smallest["_design"], smallest["_resources"].over_limit(board), board)
                              + " (the smallest PE array edgevit considers)")
    # The fastest; within 2 % of it, the one with fewer DSPs (less power, easier timing).
    best_ms = min(c["ms"] for c in fitting)
    chosen = min((c for c in fitting if c["ms"] <= best_ms * 1.02), key=lambda c: (c["dsp"], c["ms"]))
    table = [{k: v for k, v in c.items() if not k.startswith("_")} for c in candidates]
    return chosen["_design"], chosen["_resources"], chosen["_est"], table


def _not_fit_message(design: Design, over: dict, board) -> str:
    parts = ", ".join(f"{k} {need} of {have} ({need / have:.0%})" if have else f"{k} {need} of 0"
                      for k, (need, have) in over.items())
    return (f"The {design.pe} PE design does not fit {board.part}: {parts}, above the "
            f"{UTILISATION_LIMIT:.0%} a design can use and still close timing. Pick a smaller --pe, or another board.")


@torch.no_grad()
def plan_fpga(opts: FpgaOptions, progress: StageProgress | None = None) -> FpgaPlan:
    """Every check and decision before anything is written: board, model, task, weights, formats, routing,
    design."""
    progress = progress or SilentProgress()
    profile = get_device(opts.device, opts.profile_dirs)
    board = _board(profile)
    with progress.stage(f"{opts.model}: weights and the accelerator's graph"):
        prepared = prepare_model(opts.model, weights=opts.weights)
        graph = convert_m3vit(prepared.reference, prepared.name)
        task = graph.task_index(opts.task if opts.task is not None else 0)
    params = QuantizedWeights(graph, opts.formats)
    if params.overflow:
        name, report = next(iter(params.overflow.items()))
        raise FixedOverflowError(report.message(f"weight {name}"))
    opts.formats.check(graph)
    preprocess = Preprocess.from_dict(prepared.preprocessing)
    if opts.calib is not None:
        calib = load_image_folder(opts.calib, preprocess, opts.num_calib)
    else:
        calib = synthetic_images(preprocess, opts.num_calib, seed=0)
    patches = patchify(calib.inputs, graph.patch_size)
    all_experts = np.ones((len(graph.moe_blocks), graph.num_experts), dtype=bool)
    masks = np.zeros((len(graph.tasks), len(graph.moe_blocks), graph.num_experts), dtype=bool)
    routing: list[list[list[int]]] = []
    with progress.stage("calibration through the fixed-point reference (ranges, expert routing)",
                        total=len(graph.tasks) * len(patches)) as advance:
        for t in range(len(graph.tasks)):
            for image in patches:
                run = run_reference(graph, image, t, opts.formats, all_experts, params)
                if run.overflows:
                    name, report = next(iter(run.overflows.items()))
                    raise FixedOverflowError(report.message(name) + f" (task {graph.tasks[t][0]}, calibration "
                                             f"{calib.source}); nothing was written.")
                used = np.array(run.expert_tokens) > 0 if run.expert_tokens else np.zeros_like(all_experts)
                masks[t] |= used
                if t == task:
                    routing.append(run.expert_tokens)
                advance(1)
    if not opts.prune_experts:
        masks[:] = True
    design, resources, estimate, candidates = _pick_design(graph, opts.formats, board, routing, task, opts.pe)
    return FpgaPlan(profile=profile, model=prepared.reference, name=prepared.name, weights=prepared.weights,
                    graph=graph, task=task, params=params, preprocess=preprocess, calibration=calib.inputs,
                    calibration_source=calib.source, expert_masks=masks, routing=routing, design=design,
                    resources=resources, estimate=estimate, candidates=candidates)


def estimate_fpga(opts: FpgaOptions, progress: StageProgress | None = None) -> dict:
    plan = plan_fpga(opts, progress)
    return _estimate_record(plan)


def _estimate_record(plan: FpgaPlan) -> dict:
    board = plan.profile.fpga
    return {"model": plan.name, "device": plan.profile.name, "part": board.part,
            "task": plan.graph.tasks[plan.task][0], **plan.estimate,
            "pe_choice": "given (--pe)" if not plan.candidates else "automatic: fastest that fits",
            "candidates": plan.candidates,
            "board": {"dsp": board.dsp, "bram36": board.bram36, "uram": board.uram, "lut": board.lut,
                      "ddr_gbps": board.ddr.gbps, "axi": f"{board.axi.ports} x {board.axi.data_bits} bit",
                      "ddr_bytes_per_cycle": plan.design.ddr_bytes_per_cycle}}


def _tcl(plan: FpgaPlan) -> dict[str, str]:
    board, d = plan.profile.fpga, plan.design
    period = 1000.0 / d.clock_mhz
    hls = "\n".join([
        "# Vitis HLS: C-simulation, synthesis and IP export of the accelerator (not run by edgevit: no HLS",
        "# compiler is installable in its CI; edgevit checks the C++ with g++ C-simulation instead).",
        "open_project -reset moe_vit_prj",
        "set_top moe_vit_top",
        "add_files src/moe_vit_top.cpp -cflags \"-Isrc\"",
        "add_files -tb tb/tb_moe_vit.cpp -cflags \"-Isrc\"",
        "open_solution -reset solution1 -flow_target vivado",
        f"set_part {board.part}",
        f"create_clock -period {period:.3f} -name default",
        "csim_design -argv \"../../weights.bin ../../csim/inputs.bin 1 "
        f"{plan.task} ../../csim/dumps.bin ../../csim/stats.txt\"",
        "csynth_design",
        "export_design -format ip_catalog",
        "exit", ""])
    vivado = "\n".join([
        "# Vivado: block design with the Zynq UltraScale+ PS and the accelerator, bitstream + .hwh for PYNQ.",
        "# Minimal and unverified here (no Vivado in CI): check the PS AXI ports against your board files.",
        "create_project -force moe_vit_bd ./vivado -part " + board.part,
        *([f"set_property board_part {board.vivado_board_part} [current_project]"] if board.vivado_board_part else []),
        "set_property ip_repo_paths ./moe_vit_prj/solution1/impl/ip [current_project]",
        "update_ip_catalog",
        "create_bd_design moe_vit",
        "create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e ps",
        "apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset 1} [get_bd_cells ps]",
        *[f"set_property CONFIG.PSU__USE__S_AXI_GP{2 + i} 1 [get_bd_cells ps]" for i in range(board.axi.ports)],
        "create_bd_cell -type ip -vlnv xilinx.com:hls:moe_vit_top:1.0 moe_vit",
        "apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {Master /ps/M_AXI_HPM0_FPD} "
        "[get_bd_intf_pins moe_vit/s_axi_control]",
        "apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {Slave /ps/S_AXI_HP0_FPD} "
        "[get_bd_intf_pins moe_vit/m_axi_gmem0]",
        "apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {Slave /ps/S_AXI_HP1_FPD} "
        "[get_bd_intf_pins moe_vit/m_axi_gmem1]",
        f"set_property CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {d.clock_mhz:g} [get_bd_cells ps]",
        "validate_bd_design", "make_wrapper -files [get_files moe_vit.bd] -top -import",
        "launch_runs impl_1 -to_step write_bitstream -jobs 4", "wait_on_run impl_1", ""])
    return {"hls.tcl": hls, "vivado.tcl": vivado}


@torch.no_grad()
def compile_fpga(opts: FpgaOptions, progress: StageProgress | None = None) -> tuple[Path, dict]:
    """Plan, write the project into a temporary folder, verify it in C-simulation, then move it into place."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    ensure_writable_dir(opts.output_root)
    plan = plan_fpga(opts, progress)
    graph, formats, design = plan.graph, opts.formats, plan.design
    image, offsets = build_weight_image(graph, plan.params.raw, formats, design, plan.expert_masks)
    header = config_header(graph, formats, design, offsets)
    verify = plan.calibration[-opts.num_verify:] if opts.calib is None else None
    if verify is None:
        verify = load_image_folder(opts.calib, plan.preprocess, opts.num_verify, skip=opts.num_calib,
                                   allow_fewer=True).inputs
        if len(verify) == 0:
            verify = synthetic_images(plan.preprocess, opts.num_verify, seed=1).inputs
    patches = patchify(verify, graph.patch_size)
    out_dir = Path(opts.output_root) / f"{plan.name}-{plan.profile.name}"
    with tempfile.TemporaryDirectory(prefix="edgevit-csim-") as scratch:
        scratch = Path(scratch)
        with progress.stage("writing the HLS project and building its C-simulation with g++"):
            write_sources(scratch / "project", header)
            (scratch / "weights.bin").write_bytes(image.data())
            executable = build_csim(scratch / "project", scratch / "csim_tb")
        with progress.stage(f"C-simulation on {len(patches)} image(s), compared layer by layer"):
            result = run_csim(executable, scratch / "weights.bin", quantize(patches, formats.act), plan.task, scratch)
        names = dump_names(graph)
        cosines = []
        plan.model.task = plan.task
        fp32 = plan.model.forward_features(verify).double().numpy()
        for i, raw_patches in enumerate(patches):
            ref = run_reference(graph, raw_patches, plan.task, formats, plan.expert_masks[plan.task], plan.params)
            compare(ref.tensors, result.tensors[i], names, i)
            if result.cycles[i]["expert_tokens"]:
                routed = [c for c, b in zip(result.cycles[i]["expert_tokens"], graph.blocks) if b.moe]
                if routed != ref.expert_tokens:
                    raise VerificationError(f"C-simulation routed tokens {routed} but the reference "
                                            f"{ref.expert_tokens} (image {i}).")
            expected = schedule(graph, design, ref.expert_tokens, plan.task).total
            if result.cycles[i]["total"] != expected:
                raise VerificationError(f"C-simulation counted {result.cycles[i]['total']} cycles but the schedule "
                                        f"model {expected} (image {i}): the kernels and schedule.py disagree.")
            feats = ref.features(formats.act).reshape(-1)
            f32 = fp32[i].reshape(-1)
            cosines.append(float(feats @ f32 / (np.linalg.norm(feats) * np.linalg.norm(f32))))
        heads = _hls4ml_heads(graph, formats, scratch / "hls4ml", patches, plan) if opts.hls4ml_heads else None
        if min(cosines) < MIN_FEATURE_COSINE:
            raise VerificationError(f"The fixed-point design matches its reference bit for bit, but its final "
                                    f"features are off fp32: cosine {min(cosines):.5f} < {MIN_FEATURE_COSINE}. "
                                    "Widen the activation format (more fraction bits) and compile again.")
        manifest = {
            "manifest_version": FPGA_MANIFEST_VERSION, "kind": "hls-project",
            "model": {"name": plan.name, "family": "m3vit",
                      "params": sum(p.numel() for p in plan.model.parameters()),
                      "tasks": [{"name": n, "outputs": o} for n, o in graph.tasks]},
            "task": {"name": graph.tasks[plan.task][0], "index": plan.task,
                     "note": "run-time register (s_axilite 'task'); one image serves every task"},
            "weights": plan.weights,
            # What `edgevit profile --via serial` reads (the host C agent runs this folder: firmware/README.md).
            "backend": {"name": "hls"}, "precision": "fixed",
            "artifact": {"file": "weights.bin", "size_bytes": len(image.data()),
                         "sha256": hashlib.sha256(image.data()).hexdigest()},
            "inputs": [{"name": "patches", "shape": [graph.tokens, graph.patch_dim], "dtype": str(formats.act)}],
            "outputs": [{"name": "head", "shape": [graph.tokens - 1, graph.tasks[plan.task][1]],
                         "dtype": str(formats.act)}],
            "preprocessing": {},
            "device": {"name": plan.profile.name, "display_name": plan.profile.display_name,
                       "soc": plan.profile.soc, "part": plan.profile.fpga.part,
                       "clock_mhz": plan.profile.fpga.clock_mhz},
            "design": design.as_dict(),
            "formats": formats.as_dict(),
            "formats_choice": ("defaults of edgevit.backends.hls.reference.Formats, chosen by tools/bench_fpga.py "
                               "(error vs fp32 per candidate)" if formats == Formats() else "given (--fixed)"),
            "weight_image": {"file": "weights.bin", "bytes": len(image.data()), "axi_bits": design.axi_bits,
                             "offsets_file": "weights.json",
                             "experts_kept": {graph.tasks[t][0]: plan.expert_masks[t].astype(int).tolist()
                                              for t in range(len(graph.tasks))}},
            "calibration": {"source": plan.calibration_source, "count": len(plan.calibration),
                            "synthetic": opts.calib is None},
            "verification": {
                "images": len(patches), "layers_compared": len(names), "identical": True,
                "feature_cosine_vs_fp32": [round(c, 7) for c in cosines], "min_cosine": MIN_FEATURE_COSINE,
                "csim_cycles": [r["total"] for r in result.cycles],
                "expert_load_histogram": [r["expert_tokens"] for r in result.cycles]},
            "estimate": _estimate_record(plan),
            **({"hls4ml_heads": heads} if heads is not None else {}),
            "tool_versions": {"g++": gxx_version(), "edgevit": _version()},
            "compile_seconds": round(time.perf_counter() - started, 1),
        }
        with atomic_directory(out_dir) as tmp:
            write_sources(tmp / "project", header)
            for name, text in _tcl(plan).items():
                (tmp / "project" / name).write_text(text)
            (tmp / "weights.bin").write_bytes(image.data())
            atomic_write_json(tmp / "weights.json", {"axi_bits": design.axi_bits, "tensors": image.tensors,
                                                     "formats": formats.as_dict()})
            if heads is not None:
                for task_name in heads["tasks"]:
                    shutil.copytree(scratch / "hls4ml" / task_name, tmp / "project" / "hls4ml_heads" / task_name,
                                    ignore=shutil.ignore_patterns("*.so", "*.o"))
            atomic_write_json(tmp / "manifest.json", manifest)
            atomic_write_text(tmp / "report.md", render_fpga_report(manifest["estimate"], manifest))
            write_estimate_png(manifest["estimate"], tmp / "estimate.png")
    return out_dir, manifest


def _hls4ml_heads(graph, formats, folder: Path, patches, plan) -> dict:
    """Every task head through hls4ml (Brevitas QuantLinear, power-of-two scales -> QONNX -> hls4ml), its C-sim
    compared with the features C-simulation produced, bit for bit, against the reference's head."""
    from ..backends.hls.hls4ml_heads import convert_head

    record = {"route": "qonnx", "tasks": {}}
    for t, (name, _) in enumerate(graph.tasks):
        head = convert_head(graph, t, formats, folder / name).compile()
        worst = 0
        for raw_patches in patches:
            ref = run_reference(graph, raw_patches, t, formats, plan.expert_masks[t], plan.params)
            got = head.predict(ref.tensors["norm"])
            worst = max(worst, int(np.abs(got - ref.tensors["head"]).max()))
        if worst:
            raise VerificationError(f"hls4ml's head for task {name} differs from the reference by up to {worst} "
                                    "LSB; nothing was written.")
        record["tasks"][name] = {"precisions": head.precisions, "max_lsb_difference": worst,
                                 "folder": f"project/hls4ml_heads/{name}"}
    return record


def _version() -> str:
    from importlib.metadata import version
    return version("edgevit")


def render_fpga_report(est: dict, manifest: dict | None = None) -> str:
    lines = [f"# {est['model']} on {est['device']} ({est['part']}), task {est['task']}", ""]
    if manifest:
        v = manifest["verification"]
        lines += [f"C-simulation: {v['layers_compared']} layers identical to the fixed-point reference on "
                  f"{v['images']} image(s); final features vs fp32 cosine {min(v['feature_cosine_vs_fp32']):.6f}.",
                  ""]
    lines += [f"Estimated latency: **{est['ms']:.3f} ms** ({est['cycles']:.0f} cycles at {est['clock_mhz']:g} MHz, "
              f"PE {est['pe']}); compute floor {est['floor_ms']:.3f} ms for {est['active_macs'] / 1e6:.1f} M active "
              f"MACs: {est['x_floor']:.3f}x the floor.", "",
              "| kind | cycles | compute | DDR stall | floor | bound |", "|---|---:|---:|---:|---:|---|"]
    for kind, k in est["by_kind"].items():
        lines.append(f"| {kind} | {k['cycles']:.0f} | {k['compute_cycles']:.0f} | {k['ddr_stall_cycles']:.0f} | "
                     f"{k['floor_cycles']:.0f} | {k['bound']} |")
    r, u = est["resources"], est["utilisation"]
    lines += ["", "| resource | used | board | utilisation |", "|---|---:|---:|---:|"]
    for key in ("dsp", "bram36", "uram", "lut"):
        lines.append(f"| {key} | {r[key]} | {est['board'][key]} | {u[key]:.1%} |")
    lines += ["", f"Fits (every resource under {est['utilisation_limit']:.0%}): {'yes' if est['fits'] else 'no'}.",
              f"Basis: {est['basis']}. {r['basis']}.", ""]
    return "\n".join(lines)


def write_estimate_png(est: dict, path: Path) -> None:
    """Cycles by layer kind (compute vs DDR stall, with the floor) and resource utilisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(est["by_kind"])
    compute = [est["by_kind"][k]["compute_cycles"] / 1e3 for k in kinds]
    stall = [est["by_kind"][k]["ddr_stall_cycles"] / 1e3 for k in kinds]
    floor = [est["by_kind"][k]["floor_cycles"] / 1e3 for k in kinds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(kinds, compute, label="compute")
    ax1.bar(kinds, stall, bottom=compute, label="DDR stall")
    ax1.scatter(kinds, floor, color="k", marker="_", s=400, label="MAC floor", zorder=3)
    ax1.set_ylabel("k cycles")
    ax1.set_title(f"{est['model']} on {est['device']}: {est['ms']:.2f} ms ({est['x_floor']:.2f}x floor), "
                  f"PE {est['pe']}")
    ax1.legend()
    keys = ["dsp", "bram36", "uram", "lut"]
    ax2.bar(keys, [min(est["utilisation"][k], 1.5) * 100 for k in keys])
    ax2.axhline(est["utilisation_limit"] * 100, color="r", linestyle="--", label="limit")
    ax2.set_ylabel("% of the board")
    ax2.set_title(est["part"])
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
