// edgevit MoE-ViT accelerator kernels (Vitis HLS C++; C-simulation with g++ and hls4ml's ap_types).
//
// One tiled linear unit (EV_PE_ROWS tokens x EV_PE_COLS outputs per cycle) serves every linear layer and every
// expert, with fused epilogues (bias, GELU, residual, gate-weighted accumulate); weights stream from DDR one
// column tile at a time into ping/pong buffers; attention keeps K/V on chip and runs a single-pass (online)
// softmax whose normalisation is deferred to the end; LayerNorm is one pass of sums with a Newton rsqrt; the MoE
// layer routes tokens into per-expert queues so each active expert's weights load once per layer.
//
// Bit-exactness: the arithmetic is the numpy reference's (edgevit/backends/hls/reference.py) operation for
// operation. Linear layers accumulate ap_fixed products exactly (acc_t has all their fraction bits) and round
// once (AP_RND, AP_SAT) on assignment to act_t; everything non-linear runs on raw integers (fixed_math.h).
//
// Cycles: C-simulation counts what the schedule takes, tile by tile (ev_sched_tile): a tile's weight load
// overlaps the previous tile's compute (double buffering), so each step costs max(previous compute, this load).
// edgevit/backends/hls/schedule.py computes the same sequence analytically; the tests hold them equal.
#ifndef EDGEVIT_MOE_VIT_H
#define EDGEVIT_MOE_VIT_H

#include <stdint.h>

#include "edgevit_config.h"
#include "fixed_math.h"

// ------------------------------------------------------------------------------------------------ schedule
enum ev_kind { EV_K_LINEAR = 0, EV_K_ATTENTION, EV_K_LAYERNORM, EV_K_GATE, EV_K_EXPERT, EV_K_COUNT };

struct ev_stats {
    uint64_t compute[EV_K_COUNT];    // cycles the MAC array / unit is busy, by kind
    uint64_t stall[EV_K_COUNT];      // cycles waiting for DDR beyond the overlapped compute, by kind
    uint64_t total;
    uint64_t prev_compute;           // compute of the tile in flight (its successor's load overlaps it)
    int prev_kind;
    int expert_tokens[EV_DEPTH][EV_NUM_EXPERTS > 0 ? EV_NUM_EXPERTS : 1];
};

#ifndef __SYNTHESIS__
extern ev_stats ev_csim_stats;  // defined once, in the top function's file
// The testbench defines it: one named tensor of raw values, written in program order.
void ev_dump(const char* name, int index, const int64_t* raw, int rows, int cols);
#endif

inline void ev_sched_tile(int kind, uint64_t compute, uint64_t load) {
#ifndef __SYNTHESIS__
    ev_stats& s = ev_csim_stats;
    const uint64_t step = load > s.prev_compute ? load : s.prev_compute;
    s.total += step;
    if (load > s.prev_compute) s.stall[kind] += load - s.prev_compute;
    s.compute[kind] += compute;
    s.prev_compute = compute;
    s.prev_kind = kind;
#endif
}

inline void ev_sched_finish() {
#ifndef __SYNTHESIS__
    ev_csim_stats.total += ev_csim_stats.prev_compute;
    ev_csim_stats.prev_compute = 0;
#endif
}

inline uint64_t ev_ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// DDR cycles for one burst of `bytes` (latency + data at the design's bytes per cycle).
inline uint64_t ev_load_cycles(uint64_t bytes) {
    return bytes ? EV_DDR_LATENCY + ev_ceil_div(bytes, EV_DDR_BYTES_PER_CYCLE) : 0;
}

// --------------------------------------------------------------------------------------------- DDR reading
// The weight image is little-endian fields packed into AXI words: 16-bit weights / norm params, 32-bit biases.
template <int BITS>
inline int64_t ev_field(const axi_word_t* ddr, int word_offset, int index) {
    const int per_word = EV_AXI_BITS / BITS;
    const axi_word_t w = ddr[word_offset + index / per_word];
    const int lo = (index % per_word) * BITS;
    ap_int<BITS> v = w.range(lo + BITS - 1, lo);
    return v.to_int64();
}

// --------------------------------------------------------------------------------------------- linear unit
enum ev_epilogue { EV_EPI_NONE = 0, EV_EPI_GELU, EV_EPI_RESIDUAL, EV_EPI_GATE_ACC };

// y[r][o] = epilogue(x[in_rows[r]][:] . W[:, o] + b[o]) for r < n (in_rows == 0: the identity).
// W is stored as column tiles of EV_PE_COLS outputs: tile t holds W[i][t*C + c] at element i*C + c.
// bias_per_token: b is an (n, out) matrix (the patch embedding's position + class-token bias).
// EV_EPI_RESIDUAL: y[r][o] = sat(y + residual[r][o]) (residual may be y itself: each element is read first).
// EV_EPI_GATE_ACC: gate_acc[out_rows[r]][o] += round(y * gate[out_rows[r]]), the MoE combine (y is not stored).
inline void ev_linear(const axi_word_t* ddr, int w_off, int b_off, bool bias_per_token, const act_t* x,
                      const int* in_rows, int n, int in, int out, act_t* y, int epilogue, const act_t* residual,
                      const int* out_rows, const int64_t* gate, int64_t* gate_acc, int kind) {
    static weight_t wbuf[EV_MAX_IN][EV_PE_COLS];  // one of the ping/pong pair (C-sim needs only the one in use)
    const int C = EV_PE_COLS;
    const int tiles = (int)ev_ceil_div(out, C);
    const int tile_words = (int)ev_ceil_div((uint64_t)in * C * 16, EV_AXI_BITS);
    const uint64_t compute = ev_ceil_div(n, EV_PE_ROWS) * (uint64_t)in + EV_LINEAR_DEPTH;
    const uint64_t bias_bytes = (uint64_t)(bias_per_token ? n : 1) * C * 4;
    const uint64_t load = ev_load_cycles((uint64_t)in * C * 2 + bias_bytes);
TILES:
    for (int t = 0; t < tiles; t++) {
    LOAD:
        for (int i = 0; i < in; i++)
            for (int c = 0; c < C; c++)
                wbuf[i][c] = ev_from_raw<weight_t>(ev_field<16>(ddr, w_off + t * tile_words, i * C + c));
    ROWS:
        for (int r = 0; r < n; r++) {
            const act_t* xr = x + (int64_t)(in_rows ? in_rows[r] : r) * in;
        COLS:
            for (int c = 0; c < C; c++) {
                const int o = t * C + c;
                if (o >= out) break;
                bias_t b = ev_from_raw<bias_t>(ev_field<32>(ddr, b_off, bias_per_token ? r * out + o : o));
                acc_t acc = b;
            MAC:
                for (int i = 0; i < in; i++) {
#pragma HLS PIPELINE II = 1
                    acc += xr[i] * wbuf[i][c];
                }
                act_t v = acc;  // AP_RND + AP_SAT: the one rounding of a linear layer
                if (epilogue == EV_EPI_GELU) {
                    v = ev_from_raw<act_t>(ev_gelu(ev_raw(v), EV_ACT_FRAC));
                } else if (epilogue == EV_EPI_RESIDUAL) {
                    v = ev_from_raw<act_t>(ev_raw(v) + ev_raw(residual[(int64_t)r * out + o]));
                } else if (epilogue == EV_EPI_GATE_ACC) {
                    const int token = out_rows[r];
                    gate_acc[(int64_t)token * out + o] += ev_round_shift(ev_raw(v) * gate[token], EV_GATE_FRAC);
                    continue;
                }
                y[(int64_t)r * out + o] = v;
            }
        }
        ev_sched_tile(kind, compute, load);
    }
}

// ------------------------------------------------------------------------------------------------ LayerNorm
inline int64_t ev_div_round(int64_t a, int64_t d) {  // round(a / d) half up, floor division (as numpy's //)
    const int64_t num = 2 * a + d, den = 2 * d;
    int64_t q = num / den;
    if ((num % den != 0) && (num < 0)) q -= 1;
    return q;
}

inline void ev_layernorm(const axi_word_t* ddr, int w_off, int b_off, const act_t* x, act_t* y, int n) {
    const int D = EV_DIM;
    const int64_t eps = EV_LN_EPS_RAW;
ROWS:
    for (int r = 0; r < n; r++) {
        int64_t s1 = 0, s2 = 0;
    SUMS:  // one pass: both sums
        for (int d = 0; d < D; d++) {
            const int64_t v = ev_raw(x[r * D + d]);
            s1 += v;
            s2 += v * v;
        }
        const int64_t mean = ev_div_round(s1 << EV_LN_MEAN_EXTRA, D);
        const int64_t ex2 = ev_div_round(s2, D);
        int64_t var = ex2 - ev_round_shift(mean * mean, 2 * EV_LN_MEAN_EXTRA);
        if (var < 0) var = 0;
        const int64_t rs = ev_rsqrt(var + eps, 2 * EV_ACT_FRAC, EV_RSQRT_FRAC);
        const int64_t mean_act = ev_round_shift(mean, EV_LN_MEAN_EXTRA);
    NORM:
        for (int d = 0; d < D; d++) {
#pragma HLS PIPELINE II = 1
            const int64_t c = ev_raw(x[r * D + d]) - mean_act;
            const int64_t nrm = ev_shift_saturate(c * rs, EV_RSQRT_FRAC, EV_ACT_WIDTH, true);
            const int64_t g = ev_field<16>(ddr, w_off, d), b = ev_field<16>(ddr, b_off, d);
            const int64_t v = nrm * g + (int64_t)((uint64_t)b << EV_ACT_FRAC);
            y[r * D + d] = ev_from_raw<act_t>(ev_shift_saturate(v, EV_NORM_FRAC, EV_ACT_WIDTH, true));
        }
    }
    const uint64_t compute = (uint64_t)n * (2 * ev_ceil_div(D, EV_LN_LANES)) + EV_LN_DEPTH;
    ev_sched_tile(EV_K_LAYERNORM, compute, ev_load_cycles((uint64_t)D * 2 * 2));
}

// ------------------------------------------------------------------------------------------------ attention
// qkv: (T, 3D) with the 1/sqrt(head_dim) scale already in q. out: (T, D), heads concatenated.
inline void ev_attention(const act_t* qkv, act_t* out) {
    const int T = EV_TOKENS, D = EV_DIM, DH = EV_HEAD_DIM, X = EV_ATTN_ACC_EXTRA, E = EV_EXP_FRAC;
    static int64_t scores[EV_TOKENS];
    static int64_t acc[EV_HEAD_DIM];
HEADS:
    for (int h = 0; h < EV_HEADS; h++) {
    QUERIES:
        for (int q = 0; q < T; q++) {
        SCORES:
            for (int j = 0; j < T; j++) {
                qk_acc_t s = 0;
                for (int d = 0; d < DH; d++) s += qkv[q * 3 * D + h * DH + d] * qkv[j * 3 * D + D + h * DH + d];
                act_t sa = s;
                scores[j] = ev_raw(sa);
            }
            int64_t m = scores[0];
            int64_t l = (int64_t)1 << E;
            for (int d = 0; d < DH; d++) acc[d] = ev_raw(qkv[2 * D + h * DH + d]) << X;
        ONLINE:  // single pass: a new maximum rescales the running sum and accumulator
            for (int j = 1; j < T; j++) {
                const int64_t s = scores[j];
                const int64_t diff = s > m ? m - s : s - m;
                const int64_t e = ev_exp_neg(diff, EV_ACT_FRAC);
                const act_t* v = qkv + j * 3 * D + 2 * D + h * DH;
                if (s > m) {
                    l = ev_round_shift(l * e, E) + ((int64_t)1 << E);
                    for (int d = 0; d < DH; d++) acc[d] = ev_round_shift(acc[d] * e, E) + (ev_raw(v[d]) << X);
                    m = s;
                } else {
                    l = l + e;
                    for (int d = 0; d < DH; d++) acc[d] = acc[d] + ev_round_shift(e * ev_raw(v[d]), E - X);
                }
            }
            const int64_t r = ev_reciprocal(l, E, EV_RECIP_FRAC);
        OUTPUT:  // the deferred normalisation
            for (int d = 0; d < DH; d++)
                out[q * D + h * DH + d] = ev_from_raw<act_t>(
                    ev_shift_saturate(acc[d] * r, X + EV_RECIP_FRAC, EV_ACT_WIDTH, true));
        }
        const uint64_t passes = ev_ceil_div(T, EV_PE_ROWS);
        const uint64_t compute = passes * (ev_ceil_div(T, EV_PE_COLS) * DH + ev_ceil_div(DH, EV_PE_COLS) * T +
                                           EV_ATTN_DEPTH);
        ev_sched_tile(EV_K_ATTENTION, compute, 0);
    }
}

// ------------------------------------------------------------------------------------------------ MoE gate
// weights[t][e]: raw gate-format weight of expert e for token t (0 unless e is in t's top-k). allowed[e]: the
// expert is in this task's weight image (w_off >= 0).
inline void ev_gate_topk(const act_t* logits, const bool* allowed, int64_t* weights) {
    const int T = EV_TOKENS, NE = EV_NUM_EXPERTS;
TOKENS:
    for (int t = 0; t < T; t++) {
        bool taken[EV_NUM_EXPERTS];
        int chosen[EV_TOP_K];
        int64_t p[EV_TOP_K];
        for (int e = 0; e < NE; e++) {
            taken[e] = !allowed[e];
            weights[t * NE + e] = 0;
        }
    SELECT:  // k passes of a first-maximum compare: ties go to the lower index
        for (int k = 0; k < EV_TOP_K; k++) {
            int best = -1;
            int64_t best_v = 0;
            for (int e = 0; e < NE; e++) {
                const int64_t v = ev_raw(logits[t * NE + e]);
                if (!taken[e] && (best < 0 || v > best_v)) {
                    best = e;
                    best_v = v;
                }
            }
            chosen[k] = best;
            taken[best] = true;
        }
        const int64_t top = ev_raw(logits[t * NE + chosen[0]]);
        int64_t sum = 0;
        for (int k = 0; k < EV_TOP_K; k++) {
            p[k] = ev_exp_neg(ev_raw(logits[t * NE + chosen[k]]) - top, EV_ACT_FRAC);
            sum += p[k];
        }
        const int64_t r = ev_reciprocal(sum, EV_EXP_FRAC, EV_RECIP_FRAC);
        for (int k = 0; k < EV_TOP_K; k++)
            weights[t * NE + chosen[k]] = ev_shift_saturate(p[k] * r, EV_EXP_FRAC + EV_RECIP_FRAC - EV_GATE_FRAC,
                                                            EV_GATE_WIDTH, false);
    }
    ev_sched_tile(EV_K_GATE, (uint64_t)T * (EV_TOP_K + EV_GATE_DEPTH), 0);
}

#endif
