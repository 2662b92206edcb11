"""`edgevit split`: split inference across edge devices. `plan` decides where to cut (or not to)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, profiles_option, progress_display


@cli.group("split")
def split_group() -> None:
    """Split one model across several edge devices joined by a network link."""


@split_group.command("plan")
@click.argument("model")
@click.option("--devices", "-d", "devices", required=True,
              help="Comma-separated device profile names, in pipeline order (a name may repeat: two rpi5 boards).")
@click.option("--link", "link", required=True, help="Link profile: wifi5, wifi6, gbe, usb3, loopback (or yours).")
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: one image end to end; throughput: images/s of the pipeline (slowest stage or transfer).")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="int8", show_default=True)
@click.option("--boundary-dtype", type=click.Choice(["fp32", "fp16", "int8", "auto"]), default="fp32",
              show_default=True,
              help="How the tensor crossing a cut is sent.")
@click.option("--order", type=click.Choice(["given", "search"]), default="given", show_default=True,
              help="given: stages follow --devices (a device may be left out); search: the planner picks order "
                   "and subset.")
@click.option("--costs", "source", type=click.Choice(["auto", "estimate", "profile", "peak"]), default="auto",
              show_default=True, help="Where stage times come from; auto: estimate, else a stored profile, else peak.")
@click.option("--unit-times", type=click.Path(path_type=Path),
              help="host: measured per-unit times, JSON {\"unit_ms\": {unit: ms}, \"call_ms\": ms}.")
@click.option("--stored-profiles", "stored", multiple=True, type=click.Path(path_type=Path),
              help="Folders searched for `edgevit profile` results (default: out).")
@click.option("--calibration-dir", type=click.Path(path_type=Path), default=Path("out/calibration"),
              show_default=True, help="Latency-model calibrations (edgevit calibrate).")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, when not the zoo default.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (for the export).")
@profiles_option
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("plan.json"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON too.")
def plan_cmd(model: str, devices: str, link: str, objective: str, precision: str, boundary_dtype: str, order: str,
             source: str, unit_times: Path | None, stored: tuple[Path, ...], calibration_dir: Path,
             input_shape: str | None, num_classes: int | None, weights: Path | None,
             profile_dirs: tuple[Path, ...], output: Path, as_json: bool) -> None:
    """Where to cut MODEL across --devices over --link (or "don't split"); writes plan.json."""
    from ..models import parse_input_shape
    from ..split.planner import plan_split, write_plan

    with progress_display(enabled=not as_json) as progress:
        plan = plan_split(model, devices.split(","), link, objective, precision, boundary_dtype, order, source,
                          parse_input_shape(input_shape), num_classes, weights, unit_times,
                          list(stored) or [Path("out")], calibration_dir, list(profile_dirs), progress)
        write_plan(plan, output)
    if as_json:
        return print_json(plan)
    p = plan["predicted"]
    out.print(f"[bold]{plan['model']}[/] {plan['precision']} over [bold]{plan['link']['name']}[/] "
              f"({plan['link']['bandwidth_mbps']:g} Mbps, RTT {plan['link']['rtt_ms']:g} ms), objective "
              f"{plan['objective']}: {p['latency_ms']:.2f} ms per image, {p['throughput_ips']:.2f} images/s")
    table = Table(title="stages")
    for col in ("stage", "device", "backend", "units", "ms", "memory MB", "basis"):
        table.add_column(col, justify="right" if col in ("ms", "memory MB") else "left")
    for s in plan["stages"]:
        units = s["units"][0] if len(s["units"]) == 1 else f"{s['units'][0]} .. {s['units'][-1]} ({len(s['units'])})"
        table.add_row(str(s["index"]), s["device"], s["backend"], units, f"{s['predicted_ms']:.3f}",
                      f"{s['memory_mb']:.1f}", s["basis"])
    out.print(table)
    for t in plan["transfers"]:
        out.print(f"transfer {t['from_stage']}->{t['to_stage']} after {t['unit']}: {t['bytes']} bytes, "
                  f"{t['predicted_ms']:.3f} ms")
    out.print(f"bottleneck: {p['bottleneck']}")
    style = "green" if plan["verdict"] == "split" else "yellow"
    out.print(f"verdict: [bold {style}]{plan['verdict']}[/]")
    for d in plan["devices"]:
        out.print(f"{d['name']}: {d['basis']}: {d['figures']}")
    out.print(f"plan: {output} (id {plan['plan_id']})")


@split_group.command("build")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-split-PLANID/.")
@click.option("--weights", type=click.Path(path_type=Path), help="The checkpoint the plan was made with.")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration images (int8 plans); default synthetic.")
@click.option("--num-calib", default=16, show_default=True, type=click.IntRange(1))
@click.option("--num-verify", default=4, show_default=True, type=click.IntRange(1),
              help="Images the chain of stage artifacts is checked on against the whole model.")
@click.option("--json", "as_json", is_flag=True, help="Print the split manifest as JSON.")
def build_cmd(plan_file: Path, output_root: Path, weights: Path | None, calib: Path | None, num_calib: int,
              num_verify: int, as_json: bool) -> None:
    """One verified artifact per stage of PLAN_FILE (export once, cut, lower per device, verify the chain)."""
    from ..split.artifacts import build_from_plan

    with progress_display(enabled=not as_json) as progress:
        out_dir, manifest = build_from_plan(plan_file, output_root, weights, calib, num_calib, num_verify, progress)
    if as_json:
        return print_json(manifest)
    table = Table(title=f"{manifest['model']}: {len(manifest['stages'])} stage(s), plan {manifest['plan_id']}")
    for col in ("stage", "device", "backend", "units", "in -> out", "boundary", "MB"):
        table.add_column(col, justify="right" if col in ("stage", "MB") else "left")
    for s in manifest["stages"]:
        units = s["units"][0] + (f" .. {s['units'][-1]}" if len(s["units"]) > 1 else "")
        table.add_row(str(s["index"]), s["device"], s["backend"], units,
                      f"{'x'.join(map(str, s['in_shape']))} -> {'x'.join(map(str, s['out_shape']))}", s["out_dtype"],
                      f"{s['size_bytes'] / 2**20:.2f}")
    out.print(table)
    v = manifest["verification"]
    out.print(f"chain vs whole model: SQNR {v['sqnr_db']:.1f} dB, cosine {v['cosine']:.6f}, max abs "
              f"{v['max_abs_error']:.3g}; written to {out_dir}")


@split_group.command("run")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--workers", required=True, help="host:port of each worker (`edgevit worker`), one per stage, in order.")
@click.option("--images", type=click.Path(path_type=Path), help="Folder of images (default: synthetic).")
@click.option("--count", default=16, show_default=True, type=click.IntRange(1), help="Images to run.")
@click.option("--artifacts", default=Path("out"), show_default=True, type=click.Path(path_type=Path),
              help="Where `split build` wrote the build, when TARGET is a plan.json.")
@click.option("--window", default=2, show_default=True, type=click.IntRange(1), help="Images in flight per stage.")
@click.option("--stall-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds without an answer before a worker counts as stalled.")
@click.option("--link-delay-ms", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Added one-way delay per frame (emulates a link's latency).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the run report (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
def run_cmd(target: Path, workers: str, images: Path | None, count: int, artifacts: Path, window: int,
            stall_timeout: float, link_delay_ms: float, output: Path | None, as_json: bool) -> None:
    """Run images through a split build (TARGET: its folder, or the plan.json it was built from) on workers."""
    from .._io import atomic_write_json
    from ..data import Preprocess, load_image_folder, synthetic_images
    from ..models import get_model_spec
    from ..split.artifacts import load_build
    from ..split.coordinator import run_pipeline

    manifest, stages = load_build(target, artifacts)
    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    if not addresses:
        raise click.UsageError("--workers needs at least one host:port.")
    spec = get_model_spec(manifest["model"]) if ":" not in manifest["model"] else None
    shape = manifest["input_shape"]
    pre = Preprocess.from_dict({**(spec.preprocessing() if spec else {"mean": [0.5] * 3, "std": [0.5] * 3,
                                                                        "crop_pct": 1.0, "interpolation": "bilinear"}),
                                "input_size": shape[1:]})
    data = load_image_folder(images, pre, count, allow_fewer=True) if images else synthetic_images(pre, count)
    assignment = [k % len(addresses) for k in range(len(stages))]
    with progress_display(enabled=not as_json) as progress:
        with progress.stage(f"{len(data)} images through {len(stages)} stage(s) on {len(addresses)} worker(s)",
                            total=len(data)) as advance:
            report = run_pipeline(manifest["plan_id"], stages, addresses, data.inputs, assignment, window,
                                  stall_timeout, link_delay_ms / 1e3,
                                  on_event=lambda kind, info: advance(1) if kind == "image_done" else None)
    result = {**report.as_dict(), "model": manifest["model"], "source": data.source}
    if all(o.ndim == 2 for o in report.outputs):   # classification logits: the predicted class per image
        result["top1"] = [int(o.argmax(1)[0]) for o in report.outputs]
    if output is not None:
        atomic_write_json(output, result)
    if as_json:
        return print_json(result)
    out.print(f"{len(report.outputs)} images in {report.seconds:.2f} s ({report.images_per_s:.2f} images/s), "
              f"every one answered once, in order")
    table = Table(title="stages")
    for col in ("stage", "worker(s)", "compute ms (mean)"):
        table.add_column(col)
    for s in range(len(stages)):
        who = sorted({h[s] for h in report.handled_by})
        table.add_row(str(s), ", ".join(who), f"{result['stage_compute_ms'].get(s, 0):.2f}")
    out.print(table)
    for f in report.failures:
        out.print(f"[yellow]worker failed:[/] {f['worker']} ({f['reason']}); stages {f['stages']} moved to "
                  f"{f['moved_to']} in {f['recovery_s']:.3f} s")


@split_group.command("classwise")
@click.argument("model")
@click.option("--devices", "-d", "devices", required=True,
              help="Comma-separated device profile names; one class-wise sub-model each (a faster device takes "
                   "more classes).")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Labelled folder (DIR/CLASS/*.png) to train on; a held-out share is the test set unless "
                   "--test-data is given.")
@click.option("--test-data", type=click.Path(path_type=Path), help="Labelled folder of held-out test images.")
@click.option("--test-fraction", default=0.25, show_default=True, type=click.FloatRange(0.05, 0.9),
              help="Share of --data held out (stratified, seeded) when --test-data is not given.")
@click.option("--sub-model", help="A smaller zoo variant for the sub-models (default: MODEL itself).")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1),
              help="Training epochs of the whole model and of every sub-model (the same budget).")
@click.option("--fusion-steps", default=300, show_default=True, type=click.IntRange(1),
              help="Optimizer steps of the fusion MLP (sub-models frozen).")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="Sub-model artifacts (the fusion MLP is always fp32).")
@click.option("--speeds", help="Relative device speeds, one per device (default: MACs / each profile's peak).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", help="host:port of `edgevit worker`s: run the test images fanned out to them and "
                                "compare with the in-process fused artifacts.")
@click.option("--count", default=32, show_default=True, type=click.IntRange(1),
              help="Test images run on the workers.")
@profiles_option
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-classwise-PLANID/.")
@click.option("--json", "as_json", is_flag=True, help="Print the class-wise manifest (and run) as JSON.")
def classwise_cmd(model: str, devices: str, data_dir: Path, test_data: Path | None, test_fraction: float,
                  sub_model: str | None, epochs: int, fusion_steps: int, precision: str, speeds: str | None,
                  seed: int, workers: str | None, count: int, profile_dirs: tuple[Path, ...], output_root: Path,
                  as_json: bool) -> None:
    """Class-wise split (ED-ViT): one sub-model per device for a subset of the classes of --data (plus "other"),
    fused by a small MLP; accuracy against the whole model; verified artifacts; optionally a fan-out run."""
    import torch

    from .._io import atomic_write_json
    from ..data import Preprocess, load_labelled_folder, split_indices
    from ..errors import EdgevitError
    from ..models import get_model_spec
    from ..split.classwise import (
        build_classwise,
        evaluate_classwise,
        fused_logits_local,
        load_classwise,
        plan_classwise,
        run_fanout,
    )

    names = [d.strip() for d in devices.split(",") if d.strip()]
    try:
        rel = [float(v) for v in speeds.split(",")] if speeds else None
    except ValueError:
        raise EdgevitError(f"--speeds takes numbers, one per device (e.g. 1,2.5); got '{speeds}'.") from None
    from ..devices import get_device
    for name in names:                 # an unknown device fails before any image is read
        get_device(name, list(profile_dirs))
    spec = get_model_spec(model)
    if sub_model:
        get_model_spec(sub_model)
    pre = Preprocess.from_dict(spec.preprocessing())
    with progress_display(enabled=not as_json) as progress:
        with progress.stage(f"reading {data_dir}"):
            data = load_labelled_folder(data_dir, pre)
        plan = plan_classwise(model, names, data, precision, sub_model, rel, list(profile_dirs))
        if test_data is not None:
            test = load_labelled_folder(test_data, pre)
            if test.classes != data.classes:
                raise EdgevitError(f"--test-data {test_data} has classes {test.classes}, --data has {data.classes}: "
                                   "they must be the same class folders.")
            x_train, y_train, x_test, y_test = data.inputs, data.labels, test.inputs, test.labels
        else:
            train_idx, test_idx = split_indices(data.labels.numpy(), test_fraction, seed)
            train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
            x_train, y_train = data.inputs[train_idx], data.labels[train_idx]
            x_test, y_test = data.inputs[test_idx], data.labels[test_idx]
        from ..split.classwise import train_classwise
        models = train_classwise(plan, x_train, y_train, epochs, seed, fusion_steps, progress=progress)
        with progress.stage(f"evaluating on {len(y_test)} held-out images"):
            evaluation = evaluate_classwise(plan, models, x_test, y_test)
        calib = x_train[torch.linspace(0, len(x_train) - 1, min(32, len(x_train))).long()]
        out_dir, manifest = build_classwise(plan, models, output_root, calib, x_test[:8], evaluation, progress)
        result = {"build": str(out_dir), **manifest}
        if workers:
            addresses = [w.strip() for w in workers.split(",") if w.strip()]
            _, subs, fusion = load_classwise(out_dir)
            images = x_test[:count]
            with progress.stage(f"{len(images)} images fanned out to {len(subs)} sub-model(s) on {len(addresses)} "
                                f"worker(s)", total=len(images) * len(subs)) as advance:
                report = run_fanout(f"{plan['plan_id']}-{manifest['build_id']}", subs, fusion, addresses, images,
                                    on_event=lambda kind, info: advance(1) if kind == "image_done" else None)
            local = fused_logits_local(subs, fusion, images)
            run = report.as_dict()
            run["same_predictions_as_in_process"] = bool(torch.equal(report.logits.argmax(1), local.argmax(1)))
            run["max_abs_diff_vs_in_process"] = float((report.logits - local).abs().max())
            run["top1"] = round(float((report.logits.argmax(1) == y_test[:count]).float().mean() * 100), 2)
            result["run"] = run
            atomic_write_json(out_dir / "classwise_run.json", run)
    if as_json:
        return print_json(result)
    ev = evaluation
    out.print(f"[bold]{model}[/] class-wise over {len(names)} device(s) ({plan['sub_model']} sub-models, not "
              f"pruned), {ev['test_images']} held-out images: whole model top-1 [bold]{ev['whole_top1']:.2f} %[/], "
              f"fused [bold]{ev['fused_top1']:.2f} %[/] (chance {ev['chance_top1']:.1f} %)")
    table = Table(title=f"sub-models (plan {plan['plan_id']})")
    for col in ("#", "device", "backend", "classes", "top-1 own classes", "top-1 all (+other)", "params", "MMACs",
                "vs whole"):
        table.add_column(col, justify="left" if col in ("device", "backend", "classes") else "right")
    for s, row in zip(ev["sub_models"], manifest["sub_models"]):
        table.add_row(str(s["index"]), s["device"], row["backend"], ", ".join(s["classes"]),
                      f"{s['subset_top1']:.2f}", f"{s['all_images_top1']:.2f}", f"{s['params']:,}",
                      f"{s['macs'] / 1e6:.2f}", f"{s['params_vs_whole']:.2f}x")
    out.print(table)
    out.print(f"whole model: {ev['whole_params']:,} params, {ev['whole_macs'] / 1e6:.2f} MMACs; artifacts' fused "
              f"output vs eager: cosine {manifest['verification']['cosine']:.6f}, top-1 agreement "
              f"{manifest['verification']['top1_agreement']:.3f}; written to {out_dir}")
    if workers:
        r = result["run"]
        out.print(f"fan-out run: {r['images']} images in {r['seconds']:.2f} s, top-1 {r['top1']:.2f} %, same "
                  f"predictions as in process: {r['same_predictions_as_in_process']}")
