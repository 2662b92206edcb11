// edgevit MoE-ViT accelerator: top function (Vitis HLS). The layer sequence is the M3ViT family's; the
// dimensions, formats and weight offsets come from the generated edgevit_config.h.
#include "moe_vit.h"

#ifndef __SYNTHESIS__
ev_stats ev_csim_stats;
#define EV_DUMP_ACT(name, index, buf, rows, cols) ev_dump_act(name, index, buf, rows, cols)
static void ev_dump_act(const char* name, int index, const act_t* buf, int rows, int cols) {
    static int64_t raw[EV_TOKENS * EV_MAX_WIDE];
    for (int i = 0; i < rows * cols; i++) raw[i] = ev_raw(buf[i]);
    ev_dump(name, index, raw, rows, cols);
}
#else
#define EV_DUMP_ACT(name, index, buf, rows, cols)
#endif

void moe_vit_top(const axi_word_t* ddr, const act_t* patches, act_t* features, act_t* head_out, int task) {
#pragma HLS INTERFACE m_axi port = ddr offset = slave bundle = gmem0 max_read_burst_length = 256
#pragma HLS INTERFACE m_axi port = patches offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = features offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = head_out offset = slave bundle = gmem1
#pragma HLS INTERFACE s_axilite port = task
#pragma HLS INTERFACE s_axilite port = return
    const int T = EV_TOKENS, D = EV_DIM, NE = EV_NUM_EXPERTS > 0 ? EV_NUM_EXPERTS : 1;
    static act_t x[EV_TOKENS * EV_DIM], h[EV_TOKENS * EV_DIM], att[EV_TOKENS * EV_DIM];
    static act_t qkv[EV_TOKENS * 3 * EV_DIM], hid[EV_TOKENS * EV_MAX_HIDDEN], logits[EV_TOKENS * NE];
    static int64_t gate_w[EV_TOKENS * NE], moe_acc[EV_TOKENS * EV_DIM], gate_e[EV_TOKENS];
    static int queue[EV_TOKENS];

    ev_linear(ddr, EV_EMBED_W, EV_EMBED_B, true, patches, 0, T, EV_PATCH_DIM, D, x, EV_EPI_NONE, 0, 0, 0, 0,
              EV_K_LINEAR);
    EV_DUMP_ACT("embed", -1, x, T, D);
BLOCKS:
    for (int b = 0; b < EV_DEPTH; b++) {
        const ev_block_cfg& cfg = EV_BLOCKS[b];
        ev_layernorm(ddr, cfg.norm1_w, cfg.norm1_b, x, h, T);
        EV_DUMP_ACT("norm1", b, h, T, D);
        ev_linear(ddr, cfg.qkv_w, cfg.qkv_b, false, h, 0, T, D, 3 * D, qkv, EV_EPI_NONE, 0, 0, 0, 0, EV_K_LINEAR);
        EV_DUMP_ACT("qkv", b, qkv, T, 3 * D);
        ev_attention(qkv, att);
        EV_DUMP_ACT("attn", b, att, T, D);
        ev_linear(ddr, cfg.proj_w, cfg.proj_b, false, att, 0, T, D, D, x, EV_EPI_RESIDUAL, x, 0, 0, 0, EV_K_LINEAR);
        EV_DUMP_ACT("x_attn", b, x, T, D);
        ev_layernorm(ddr, cfg.norm2_w, cfg.norm2_b, x, h, T);
        EV_DUMP_ACT("norm2", b, h, T, D);
        if (cfg.moe) {
            bool allowed[EV_NUM_EXPERTS > 0 ? EV_NUM_EXPERTS : 1];
            for (int e = 0; e < NE; e++) allowed[e] = EV_EXPERTS[b][task][e].fc1_w >= 0;
            ev_linear(ddr, EV_GATES[b][task].w, EV_GATES[b][task].b, false, h, 0, T, D, NE, logits, EV_EPI_NONE,
                      0, 0, 0, 0, EV_K_GATE);
            ev_gate_topk(logits, allowed, gate_w);
#ifndef __SYNTHESIS__
            ev_dump("gate", b, gate_w, T, NE);
#endif
            for (int i = 0; i < T * D; i++) moe_acc[i] = 0;
        EXPERTS:  // expert by expert: its token queue, its weights loaded once
            for (int e = 0; e < NE; e++) {
                int n = 0;
                for (int t = 0; t < T; t++) {
                    gate_e[t] = gate_w[t * NE + e];
                    if (gate_e[t] != 0) queue[n++] = t;
                }
#ifndef __SYNTHESIS__
                ev_csim_stats.expert_tokens[b][e] = n;
#endif
                if (n == 0) continue;
                const ev_expert_cfg& ex = EV_EXPERTS[b][task][e];
                ev_linear(ddr, ex.fc1_w, ex.fc1_b, false, h, queue, n, D, cfg.hidden, hid, EV_EPI_GELU, 0, 0, 0, 0,
                          EV_K_EXPERT);
                ev_linear(ddr, ex.fc2_w, ex.fc2_b, false, hid, 0, n, cfg.hidden, D, 0, EV_EPI_GATE_ACC, 0, queue,
                          gate_e, moe_acc, EV_K_EXPERT);
            }
            for (int i = 0; i < T * D; i++) x[i] = ev_from_raw<act_t>(ev_raw(x[i]) + moe_acc[i]);
        } else {
            ev_linear(ddr, cfg.fc1_w, cfg.fc1_b, false, h, 0, T, D, cfg.hidden, hid, EV_EPI_GELU, 0, 0, 0, 0,
                      EV_K_LINEAR);
            EV_DUMP_ACT("fc1", b, hid, T, cfg.hidden);
            ev_linear(ddr, cfg.fc2_w, cfg.fc2_b, false, hid, 0, T, cfg.hidden, D, x, EV_EPI_RESIDUAL, x, 0, 0, 0,
                      EV_K_LINEAR);
        }
        EV_DUMP_ACT("x", b, x, T, D);
    }
    ev_layernorm(ddr, EV_NORM_W, EV_NORM_B, x, features, T);
    EV_DUMP_ACT("norm", -1, features, T, D);
    ev_linear(ddr, EV_HEADS_CFG[task].w, EV_HEADS_CFG[task].b, false, features + D, 0, T - 1, D,
              EV_HEADS_CFG[task].out, head_out, EV_EPI_NONE, 0, 0, 0, 0, EV_K_LINEAR);
    EV_DUMP_ACT("head", -1, head_out, T - 1, EV_HEADS_CFG[task].out);
    ev_sched_finish();
}
