"""The open-flow linear unit, measured: >= 1,000 random tiles through the RTL in Icarus (cocotb) compared with the
HLS fixed-point reference, then bitstreams for the boards with utilisation, Fmax and tool time.

    python tools/bench_openflow.py                      # 1,000 tiles at 4x8, ulx3s 4x8 + icebreaker 1x2 builds
    python tools/bench_openflow.py --tiles 2000 --no-build
    python tools/bench_openflow.py --boards icebreaker --pe 1x2
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from edgevit.rtl import TileShape
from edgevit.rtl.build import BuildOptions, build_bitstream
from edgevit.rtl.sim import simulate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--sim-pe", default="4x8", help="array the simulation runs (ROWSxCOLS)")
    ap.add_argument("--max-in", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boards", default="ulx3s,icebreaker")
    ap.add_argument("--pe", help="array for every board build (default: each board's)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("-o", "--output", type=Path, help="keep the build folders here")
    args = ap.parse_args(argv)

    rows, cols = (int(v) for v in args.sim_pe.lower().split("x"))
    sim = simulate(TileShape(rows, cols, args.max_in), args.tiles, seed=args.seed)
    sim.pop("bad", None)
    print(f"cocotb/Icarus {sim['shape']} (max_in {sim['max_in']}): {sim['tiles']} tiles, {sim['mismatches']} "
          f"mismatches vs the fixed-point reference, {sim['seconds']:.1f} s")
    results = {"simulation": sim, "builds": {}}
    if not args.no_build:
        root = args.output or Path(tempfile.mkdtemp(prefix="edgevit-openflow-"))
        for board in args.boards.split(","):
            _, m = build_bitstream(BuildOptions(board, root / f"rtl-{board}", args.pe))
            util = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in m["utilisation"].items() if k != "io")
            fmax = ", ".join(f"{v['achieved_mhz']:g} MHz (target {v['constraint_mhz']:g})" for v in m["fmax"].values())
            print(f"{board} {m['design']['pe']} ({m['device']['part']}): {util}; yosys LUT4 {m['yosys_lut4']}; "
                  f"Fmax {fmax}; synth {m['times_s']['synth_s']} s, pnr {m['times_s']['pnr_s']} s, "
                  f"pack {m['times_s']['pack_s']} s; {m['artifact']['file']} {m['artifact']['bytes']} B")
            print(f"  vs the HLS estimate's assumptions: {json.dumps(m['against_estimate'])}")
            results["builds"][board] = m
    print(json.dumps({"tiles": sim["tiles"], "mismatches": sim["mismatches"]}))
    return 0 if sim["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
