"""Graph + formats + design -> the weight image, its offset manifest, and the generated C++ configuration.

Weight image: one little-endian byte string of AXI words. Every tensor starts on a word boundary;
linear weights are stored as column tiles of ``pe_cols`` outputs (tile t holds ``W[i][t*C + c]`` at
element ``i*C + c``, zero-padded past the last output, each tile padded to whole words) so one tile is
one burst; biases are 32-bit words, weights and LayerNorm parameters 16-bit. Experts a task never
selects on calibration data are left out: the per-task expert table holds -1 for them.
"""
from __future__ import annotations

import numpy as np

from .convert import MoeVitGraph
from .design import PIPELINE, Design
from .reference import ATTN_ACC_EXTRA, LN_MEAN_EXTRA, RECIP_FRAC, RSQRT_FRAC, Formats

__all__ = ["WeightImage", "build_weight_image", "config_header"]

_CONTAINER_BITS = {"weight": 16, "norm": 16, "bias": 32}


class WeightImage:
    """The packed image plus, per tensor, its word offset, shape, format and container."""

    def __init__(self, axi_bits: int):
        self.word_bytes = axi_bits // 8
        self.chunks: list[bytes] = []
        self.size = 0
        self.tensors: dict[str, dict] = {}

    def add(self, name: str, raw: np.ndarray, kind: str, formats: Formats, layout: str,
            tile_cols: int | None = None) -> int:
        bits = _CONTAINER_BITS[kind]
        dtype = np.int16 if bits == 16 else np.int32
        if tile_cols is not None:      # (in, out) -> column tiles of tile_cols, each padded to whole words
            fan_in, out = raw.shape
            tiles = -(-out // tile_cols)
            padded = np.zeros((fan_in, tiles * tile_cols), dtype=np.int64)
            padded[:, :out] = raw
            parts = [self._pad(padded[:, t * tile_cols:(t + 1) * tile_cols].astype(dtype).tobytes())
                     for t in range(tiles)]
            data = b"".join(parts)
        else:
            data = self._pad(raw.astype(dtype).tobytes())
        offset = self.size // self.word_bytes
        self.chunks.append(data)
        self.size += len(data)
        fmt = getattr(formats, kind)
        self.tensors[name] = {"word_offset": offset, "bytes": len(data), "shape": list(raw.shape),
                              "format": str(fmt), "container_bits": bits, "layout": layout}
        return offset

    def _pad(self, data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % self.word_bytes)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def build_weight_image(graph: MoeVitGraph, raw: dict[str, np.ndarray], formats: Formats, design: Design,
                       expert_masks: np.ndarray) -> tuple[WeightImage, dict]:
    """Pack the quantized weights. ``expert_masks[task, moe_layer, expert]``: kept experts.

    Returns the image and the offsets the config header needs (word offsets, -1 for a pruned expert)."""
    image = WeightImage(design.axi_bits)
    C = design.pe_cols

    def linear(prefix: str) -> tuple[int, int]:
        w = image.add(prefix + ".weight", raw[prefix + ".weight"], "weight", formats, f"column tiles of {C}",
                      tile_cols=C)
        b = image.add(prefix + ".bias", raw[prefix + ".bias"], "bias", formats, "row-major")
        return w, b

    def norm(prefix: str) -> tuple[int, int]:
        return (image.add(prefix + ".weight", raw[prefix + ".weight"], "norm", formats, "vector"),
                image.add(prefix + ".bias", raw[prefix + ".bias"], "norm", formats, "vector"))

    offsets: dict = {"embed": linear("embed"), "blocks": [], "gates": [], "experts": [], "heads": []}
    kept_any = expert_masks.any(axis=0)                                       # (moe layers, experts)
    moe_index = 0
    for i, block in enumerate(graph.blocks):
        p = f"blocks.{i}"
        entry = {"norm1": norm(p + ".norm1"), "qkv": linear(p + ".qkv"), "proj": linear(p + ".proj"),
                 "norm2": norm(p + ".norm2"), "moe": block.moe, "hidden": block.hidden}
        gates, experts = [], []
        if block.moe:
            gates = [linear(p + f".gate.{t}") for t in range(len(graph.tasks))]
            stored = {e: (linear(p + f".expert.{e}.fc1"), linear(p + f".expert.{e}.fc2"))
                      for e in range(graph.num_experts) if kept_any[moe_index, e]}
            experts = [[stored[e] if expert_masks[t, moe_index, e] else None for e in range(graph.num_experts)]
                       for t in range(len(graph.tasks))]
            moe_index += 1
        else:
            entry["fc1"], entry["fc2"] = linear(p + ".fc1"), linear(p + ".fc2")
        offsets["blocks"].append(entry)
        offsets["gates"].append(gates)
        offsets["experts"].append(experts)
    offsets["norm"] = norm("norm")
    offsets["heads"] = [linear(f"head.{t}") for t in range(len(graph.tasks))]
    return image, offsets


def config_header(graph: MoeVitGraph, formats: Formats, design: Design, offsets: dict) -> str:
    """``edgevit_config.h``: dimensions, formats, design parameters and the weight offsets of one build."""
    a, w, b, n, g = formats.act, formats.weight, formats.bias, formats.norm, formats.gate
    tasks, NE = len(graph.tasks), max(graph.num_experts, 1)
    hidden = max(bl.hidden for bl in graph.blocks)
    max_in = max(graph.patch_dim, graph.dim, hidden)
    max_head = max(out for _, out in graph.tasks)
    eps_raw = int(np.floor(graph.ln_eps * 2.0 ** (2 * a.frac) + 0.5))
    lines = [
        f"// Generated by edgevit for {graph.name}: do not edit (edgevit compile regenerates it).",
        "#ifndef EDGEVIT_CONFIG_H", "#define EDGEVIT_CONFIG_H", "", "#include <stdint.h>", "",
        '#include "ap_fixed.h"', '#include "ap_int.h"', "",
        f"#define EV_TOKENS {graph.tokens}", f"#define EV_DIM {graph.dim}", f"#define EV_HEADS {graph.heads}",
        f"#define EV_HEAD_DIM {graph.head_dim}", f"#define EV_PATCH_DIM {graph.patch_dim}",
        f"#define EV_DEPTH {len(graph.blocks)}", f"#define EV_NUM_EXPERTS {graph.num_experts}",
        f"#define EV_TOP_K {max(graph.top_k, 1)}", f"#define EV_NUM_TASKS {tasks}",
        f"#define EV_MAX_HIDDEN {hidden}", f"#define EV_MAX_IN {max_in}", f"#define EV_MAX_HEAD_OUT {max_head}",
        f"#define EV_MAX_WIDE {max(3 * graph.dim, hidden, max_head)}", "",
        "// Design", f"#define EV_PE_ROWS {design.pe_rows}", f"#define EV_PE_COLS {design.pe_cols}",
        f"#define EV_AXI_BITS {design.axi_bits}", f"#define EV_DDR_BYTES_PER_CYCLE {design.ddr_bytes_per_cycle}",
        f"#define EV_CLOCK_MHZ {design.clock_mhz:g}",
        *(f"#define EV_{k.upper()} {v}" for k, v in PIPELINE.items()), "",
        "// Fixed-point formats (edgevit.backends.hls.reference.Formats)",
        f"typedef {a} act_t;", f"typedef {w} weight_t;", f"typedef {b} bias_t;", f"typedef {n} norm_t;",
        f"typedef {g} gate_t;",
        f"typedef ap_fixed<64, {64 - a.frac - w.frac}> acc_t;   // exact: every product's fraction bits",
        f"typedef ap_fixed<64, {64 - 2 * a.frac}> qk_acc_t;     // exact q . k",
        "typedef ap_uint<EV_AXI_BITS> axi_word_t;",
        f"#define EV_ACT_FRAC {a.frac}", f"#define EV_ACT_WIDTH {a.width}", f"#define EV_WEIGHT_FRAC {w.frac}",
        f"#define EV_BIAS_FRAC {b.frac}", f"#define EV_NORM_FRAC {n.frac}", f"#define EV_GATE_FRAC {g.frac}",
        f"#define EV_GATE_WIDTH {g.width}", f"#define EV_ATTN_ACC_EXTRA {ATTN_ACC_EXTRA}",
        f"#define EV_LN_MEAN_EXTRA {LN_MEAN_EXTRA}", f"#define EV_RECIP_FRAC {RECIP_FRAC}",
        f"#define EV_RSQRT_FRAC {RSQRT_FRAC}", f"#define EV_LN_EPS_RAW {eps_raw}LL", "",
        "// Weight image: word offsets (-1: not in this task's image)",
        "struct ev_block_cfg { int moe, hidden, norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, norm2_w, norm2_b, "
        "fc1_w, fc1_b, fc2_w, fc2_b; };",
        "struct ev_linear_cfg { int w, b; };", "struct ev_head_cfg { int w, b, out; };",
        "struct ev_expert_cfg { int fc1_w, fc1_b, fc2_w, fc2_b; };",
        f"static const int EV_EMBED_W = {offsets['embed'][0]}, EV_EMBED_B = {offsets['embed'][1]};",
        f"static const int EV_NORM_W = {offsets['norm'][0]}, EV_NORM_B = {offsets['norm'][1]};",
    ]
    rows = []
    for blk in offsets["blocks"]:
        fc1, fc2 = blk.get("fc1", (-1, -1)), blk.get("fc2", (-1, -1))
        vals = [int(blk["moe"]), blk["hidden"], *blk["norm1"], *blk["qkv"], *blk["proj"], *blk["norm2"], *fc1, *fc2]
        rows.append("    {" + ", ".join(str(v) for v in vals) + "}")
    lines += ["static const ev_block_cfg EV_BLOCKS[EV_DEPTH] = {", ",\n".join(rows), "};"]
    gate_rows, expert_rows = [], []
    for i in range(len(graph.blocks)):
        gates = offsets["gates"][i] or [(-1, -1)] * tasks
        gate_rows.append("    {" + ", ".join(f"{{{gw}, {gb}}}" for gw, gb in gates) + "}")
        per_task = []
        for t in range(tasks):
            experts = offsets["experts"][i][t] if offsets["experts"][i] else [None] * NE
            cells = [f"{{{e[0][0]}, {e[0][1]}, {e[1][0]}, {e[1][1]}}}" if e else "{-1, -1, -1, -1}" for e in experts]
            per_task.append("{" + ", ".join(cells) + "}")
        expert_rows.append("    {" + ", ".join(per_task) + "}")
    lines += ["static const ev_linear_cfg EV_GATES[EV_DEPTH][EV_NUM_TASKS] = {", ",\n".join(gate_rows), "};",
              f"static const ev_expert_cfg EV_EXPERTS[EV_DEPTH][EV_NUM_TASKS][{NE}] = {{",
              ",\n".join(expert_rows), "};"]
    heads = ", ".join(f"{{{hw}, {hb}, {out}}}" for (hw, hb), (_, out) in zip(offsets["heads"], graph.tasks))
    lines += [f"static const ev_head_cfg EV_HEADS_CFG[EV_NUM_TASKS] = {{{heads}}};", "", "#endif", ""]
    return "\n".join(lines)
