"""Split-inference benchmark on this machine: real `edgevit worker` processes on loopback, each pinned to a core.

    python tools/bench_split.py [--model efficientformer_l1] [--precision fp32] [--images 24]
    python tools/bench_split.py --small efficientformer_micro --json split.json

1. Profile the whole model's artifact here (`edgevit compile` + `edgevit profile --via local`), so the planner
   prices units from a stored profile (its `profile` cost source).
2. For 1, 2, 3 workers (`host` x W, loopback, objective throughput): plan, build (verified chain), run N images
   with every worker pinned to core k mod 2; images/s and the ratio to one worker, in one run. Predicted vs
   measured stage times (the workers' own compute_ms).
3. Kill a worker mid-stream: images lost / duplicated, recovery time.
4. On a small model, the planner's 2-stage split vs every 2-stage cut built and run (images/s), the gap in %.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from edgevit.compile import CompileOptions, compile_model
from edgevit.profiling.profile import ProfileOptions, profile_artifact
from edgevit.split.artifacts import build_from_plan, load_build
from edgevit.split.coordinator import run_pipeline
from edgevit.split.planner import plan_split, write_plan


def start_workers(count: int, pin: bool = True) -> tuple[list[subprocess.Popen], list[str]]:
    procs, addresses = [], []
    for k in range(count):
        cmd = [sys.executable, "-m", "edgevit", "worker", "--listen", "127.0.0.1:0"]
        if pin:
            cmd = ["taskset", "-c", str(k % (os.cpu_count() or 1)), *cmd]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    for p in procs:
        addresses.append(p.stdout.readline().split()[-1])
    return procs, addresses


def stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait()


def run_build(folder: Path, images: torch.Tensor, workers: int, kill_after: int | None = None,
              window: int = 2) -> dict:
    manifest, stages = load_build(folder)
    procs, addresses = start_workers(workers)
    try:
        run_pipeline(manifest["plan_id"], stages, addresses, images[:2],
                     assignment=[k % workers for k in range(len(stages))])          # warm-up: loads, first runs

        def on_event(kind, info):
            if kill_after is not None and kind == "image_done" and info["done"] == kill_after:
                procs[min(1, workers - 1)].kill()
        report = run_pipeline(manifest["plan_id"], stages, addresses, images, window=window,
                              assignment=[k % workers for k in range(len(stages))], on_event=on_event)
    finally:
        stop(procs)
    predicted = [s.get("predicted_ms") for s in manifest["stages"]]
    measured = report.as_dict()["stage_compute_ms"]
    return {"images_per_s": report.images_per_s, "stages": len(stages), "failures": report.failures,
            "answered": len(report.outputs), "predicted_ms": predicted,
            "measured_ms": [measured.get(s) for s in range(len(stages))], "outputs": report.outputs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientformer_l1")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--small", default="efficientformer_micro")
    ap.add_argument("--parts", default="throughput,kill,cuts", help="which sections to run, comma-separated")
    ap.add_argument("--window", type=int, default=2, help="images in flight per stage")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-split-"))
    out: dict = {"model": args.model, "precision": args.precision}

    if "throughput" in parts:
        print(f"== profiling {args.model} {args.precision} here (the planner's 'profile' costs)")
        compiled = compile_model(CompileOptions(model=args.model, device="host", backend="executorch",
                                                precision=args.precision, output_root=work))
        profile_artifact(ProfileOptions(artifact_dir=compiled.out_dir, via="local", runs=10, warmup=3, threads=1))
        shape = tuple(compiled.manifest["inputs"][0]["shape"])
        images = torch.randn(args.images, *shape[1:], generator=torch.Generator().manual_seed(0))

        runs = {}
        for workers in (1, 2, 3):
            plan = plan_split(args.model, ["host"] * workers, "loopback", "throughput", args.precision, "fp32",
                              source="profile", stored_profiles=[work])
            for stage in plan["stages"]:      # priced from the ExecuTorch profile: built and run in ExecuTorch too
                stage["backend"] = "executorch"
            write_plan(plan, work / f"plan-{workers}.json")
            folder, _ = build_from_plan(work / f"plan-{workers}.json", work)
            runs[workers] = run_build(folder, images, workers, window=args.window)
            r = runs[workers]
            print(f"{workers} worker(s): {r['stages']} stage(s) ({plan['verdict'][:40]}), "
                  f"{r['images_per_s']:.2f} images/s "
                  f"= {r['images_per_s'] / runs[1]['images_per_s']:.2f}x one worker; stage ms predicted "
                  f"{[round(p, 2) for p in r['predicted_ms']]} measured {[round(m, 2) for m in r['measured_ms']]}")
        out["throughput"] = {w: {k: v for k, v in r.items() if k != "outputs"} for w, r in runs.items()}
        errors = [abs(m - p) / m for r in runs.values() for p, m in zip(r["predicted_ms"], r["measured_ms"]) if p and m]
        median = sorted(errors)[len(errors) // 2]
        print(f"predicted vs measured stage time: worst {max(errors):.1%}, median {median:.1%}")
        out["stage_time_error"] = {"worst": max(errors), "median": sorted(errors)[len(errors) // 2]}

        print("\n== a worker killed mid-stream (2 workers)")
        folder = work / f"{args.model}-split-{json.loads((work / 'plan-2.json').read_text())['plan_id']}"
        killed = run_build(folder, images, 2, kill_after=args.images // 3)
        reference = torch.cat(runs[2]["outputs"])
        same = torch.allclose(torch.cat(killed["outputs"]), reference, atol=1e-4)
        print(f"answered {killed['answered']}/{args.images}, outputs equal the undisturbed run: {same}; failures "
              f"{[(f['stages'], f['recovery_s']) for f in killed['failures']]}")
        out["kill"] = {"answered": killed["answered"], "equal": same, "failures": killed["failures"]}

    if "cuts" in parts:
        print(f"\n== planner vs every 2-stage cut ({args.small}, 2 workers)")
        compiled = compile_model(CompileOptions(model=args.small, device="host", backend="executorch",
                                                precision="fp32", output_root=work))
        profile_artifact(ProfileOptions(artifact_dir=compiled.out_dir, via="local", runs=20, warmup=3, threads=1))
        plan = plan_split(args.small, ["host", "host"], "loopback", "throughput", "fp32", "fp32", source="profile",
                          stored_profiles=[work])
        n_units = len(plan["units"])
        small_images = torch.randn(200, *plan["input_shape"][1:])
        tried = {}
        for cut in range(n_units - 1):
            p = dict(plan, plan_id=f"cut{cut}", stages=[
                {**plan["stages"][0], "device": "host", "backend": "executorch", "first_unit": 0, "last_unit": cut},
                {**plan["stages"][0], "device": "host", "backend": "executorch", "first_unit": cut + 1,
                 "last_unit": n_units - 1}])
            write_plan(p, work / f"cut{cut}.json")
            folder, _ = build_from_plan(work / f"cut{cut}.json", work, num_calib=2, num_verify=2)
            tried[cut] = run_build(folder, small_images, 2)["images_per_s"]
        best_cut = max(tried, key=tried.get)
        chosen = plan["best_split"]["last_units"][0] if plan.get("best_split") else None
        gap = (tried[best_cut] - tried[chosen]) / tried[best_cut] if chosen is not None else None
        print(f"best cut by trying all {len(tried)}: after unit {best_cut} ({tried[best_cut]:.1f} images/s); "
              f"planner's: "
              f"after unit {chosen} ({tried.get(chosen, float('nan')):.1f} images/s): {gap:.1%} slower")
        out["planner_vs_all_cuts"] = {"tried": tried, "best": best_cut, "chosen": chosen, "gap": gap}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
