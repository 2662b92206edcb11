// The host runner for an hls artifact: the board is a "ZCU102 PS + PL" whose PL is the FPGA accelerator's
// C-simulation. The upload (format 3, the artifact's weights.bin) is the DDR image; RUN calls the same top
// function the hls backend generates (hls/templates/moe_vit_top.cpp, compiled with the artifact's own
// edgevit_config.h) on a deterministic input and reports, per layer, the cycles of the C-simulation's schedule
// model (hls/include/edgevit/moe_vit.h: ev_sched_tile), the modelled PL time, and the output's sha256.
//
// Deterministic input (the Python side rebuilds it: edgevit/backends/hls/agent_run.py): patches[t][k] raw act
// values, row 0 (the class token) all zero, else raw = ((i * 2654435761) >> 16 & 0x7FFF) - 16384 with
// i = t * EV_PATCH_DIM + k in uint32 arithmetic (|x| < 2^14 LSB).
//
// Per layer: ev_dump (called after every layer by the top function) snapshots the schedule's running total
// (committed steps + the compute in flight); a layer's cycles are the difference to the previous snapshot, so the
// rows add up to the image's total exactly as edgevit.backends.hls.schedule computes it.
#include <stdio.h>
#include <string.h>

#include <vector>

#include "edgevit_agent.h"
#include "ev_sha256.h"
#include "moe_vit.h"

#ifndef EV_TASK
#define EV_TASK 0
#endif
#ifndef EV_STORAGE_BYTES
#define EV_STORAGE_BYTES (64u << 20)
#endif

void moe_vit_top(const axi_word_t* ddr, const act_t* patches, act_t* features, act_t* head_out, int task);

namespace {

uint8_t ddr_bytes[EV_STORAGE_BYTES];    // "DDR": the uploaded weight image
uint32_t part_size, part_held;          // the upload in progress (or the complete one)
uint8_t part_sha[32];
int complete;

struct Row {
    char name[48];
    const char* op;
    uint64_t cycles;
};
Row rows[4 + EV_DEPTH * 8];
int nrows;
uint64_t mark;                  // schedule total at the previous layer boundary
void (*beat)(void);

uint64_t running_total() { return ev_csim_stats.total + ev_csim_stats.prev_compute; }

int fail(char* msg, size_t cap, int code, const char* text) {
    snprintf(msg, cap, "%s", text);
    return -code;
}

int upload_begin(uint8_t format, uint32_t size, const uint8_t sha256[32], uint32_t* held, char* msg, size_t cap) {
    if (format != EV_FORMAT_HLS)
        return fail(msg, cap, EV_ERR_UNSUPPORTED_FORMAT, "this agent runs the FPGA accelerator's weight image "
                    "(format 3, " EV_FORMAT_SUFFIX_HLS ") in C-simulation, nothing else");
    if (size > EV_STORAGE_BYTES) {
        snprintf(msg, cap, "%lu bytes do not fit the %lu-byte DDR region of this agent", (unsigned long)size,
                 (unsigned long)EV_STORAGE_BYTES);
        return -EV_ERR_TOO_LARGE;
    }
    if (size % (EV_AXI_BITS / 8))
        return fail(msg, cap, EV_ERR_BAD_PAYLOAD, "a weight image is whole AXI words; this size is not");
    if (size == part_size && memcmp(sha256, part_sha, 32) == 0) {
        *held = part_held;      // resume (or all of it, when complete)
        return 0;
    }
    memcpy(part_sha, sha256, 32);
    part_size = size;
    part_held = 0;
    complete = 0;
    *held = 0;
    return 0;
}

int upload_write(uint32_t offset, const uint8_t* data, uint32_t n, char*, size_t) {
    memcpy(ddr_bytes + offset, data, n);
    if (offset + n > part_held) part_held = offset + n;
    return 0;
}

int upload_read(uint32_t offset, uint8_t* dst, uint32_t n) {
    memcpy(dst, ddr_bytes + offset, n);
    return 0;
}

void upload_finish(int ok) {
    complete = ok;
    if (!ok) part_size = part_held = 0;
}

int holds(const uint8_t sha256[32]) { return complete && memcmp(sha256, part_sha, 32) == 0; }

const char* row_name(const char* name, int index, char* out, size_t cap) {
    const char* op = "linear";
    const char* layer = name;
    if (!strcmp(name, "x_attn")) layer = "proj";
    else if (!strcmp(name, "norm1") || !strcmp(name, "norm2") || !strcmp(name, "norm")) op = "layernorm";
    else if (!strcmp(name, "attn")) op = "attention";
    else if (!strcmp(name, "gate")) op = "gate";
    else if (!strcmp(name, "x")) {
        const bool moe = index >= 0 && EV_BLOCKS[index].moe;
        layer = moe ? "experts" : "fc2";
        op = moe ? "expert" : "linear";
    }
    if (index >= 0) snprintf(out, cap, "blocks.%d.%s", index, layer);
    else snprintf(out, cap, "%s", layer);
    return op;
}

}  // namespace

// Called by the top function after every layer (the testbench's hook, here the profiler's).
void ev_dump(const char* name, int index, const int64_t*, int, int) {
    const uint64_t now = running_total();
    if (nrows < (int)(sizeof rows / sizeof rows[0])) {
        Row& r = rows[nrows++];
        r.op = row_name(name, index, r.name, sizeof r.name);
        r.cycles = now - mark;
    }
    mark = now;
    if (beat) beat();
}

namespace {

int run(const uint8_t sha256[32], uint32_t runs, uint32_t warmup, ev_run_io* io) {
    (void)sha256;
    const size_t word_bytes = EV_AXI_BITS / 8;
    std::vector<axi_word_t> ddr(part_size / word_bytes);
    for (size_t w = 0; w < ddr.size(); w++)
        for (size_t b = 0; b < word_bytes; b++) ddr[w].range(8 * b + 7, 8 * b) = ddr_bytes[w * word_bytes + b];
    static act_t patches[EV_TOKENS * EV_PATCH_DIM], features[EV_TOKENS * EV_DIM];
    static act_t head[EV_TOKENS * EV_MAX_HEAD_OUT];
    for (uint32_t i = 0; i < (uint32_t)(EV_TOKENS * EV_PATCH_DIM); i++) {
        const int64_t raw = i < (uint32_t)EV_PATCH_DIM ? 0 : (int64_t)(((i * 2654435761u) >> 16) & 0x7FFFu) - 16384;
        patches[i] = ev_from_raw<act_t>(raw);
    }
    beat = io->heartbeat;
    std::vector<double> times;
    uint64_t total = 0;
    for (uint32_t r = 0; r < warmup + runs; r++) {
        memset(&ev_csim_stats, 0, sizeof ev_csim_stats);
        nrows = 0;
        mark = 0;
        moe_vit_top(ddr.data(), patches, features, head, EV_TASK);
        total = ev_csim_stats.total;
        if (r >= warmup) times.push_back((double)total / (EV_CLOCK_MHZ * 1000.0));
        io->heartbeat();
    }
    beat = 0;
    // The output: the task head's raw values (int64 little endian), (tokens - 1) x outputs.
    const int outs = EV_HEADS_CFG[EV_TASK].out, n = (EV_TOKENS - 1) * outs;
    io->output_len = 0;
    if ((size_t)n * 8 <= io->output_cap) {
        for (int i = 0; i < n; i++) {
            const int64_t raw = ev_raw(head[i]);
            for (int b = 0; b < 8; b++) io->output[8 * i + b] = (uint8_t)((uint64_t)raw >> (8 * b));
        }
        io->output_len = (size_t)n * 8;
    }
    uint8_t digest[32];
    char hex[65];
    ev_sha256(io->output, io->output_len, digest);
    ev_hex(digest, 32, hex);
    char* j = io->result_json;
    const size_t cap = io->result_cap;
    size_t len = 0;
    int bad = ev_json_append(j, cap, &len, "{\"times_ms\":[");
    for (size_t i = 0; i < times.size(); i++) bad |= ev_json_append(j, cap, &len, "%s%.9g", i ? "," : "", times[i]);
    bad |= ev_json_append(j, cap, &len, "],\"load_ms\":null,\"timing_source\":\"C-simulation cycle model of the "
                          "accelerator at %g MHz\",\"cycles_total\":%llu,\"op_profile\":[", (double)EV_CLOCK_MHZ,
                          (unsigned long long)total);
    for (int i = 0; i < nrows; i++)
        bad |= ev_json_append(j, cap, &len, "%s{\"name\":\"%s\",\"op\":\"%s\",\"count\":%llu,\"counter_kind\":"
                              "\"cycles\",\"ms\":%.9g}", i ? "," : "", rows[i].name, rows[i].op,
                              (unsigned long long)rows[i].cycles, (double)rows[i].cycles / (EV_CLOCK_MHZ * 1000.0));
    bad |= ev_json_append(j, cap, &len, "],\"output\":{\"tensor\":\"head\",\"task\":%d,\"shape\":[%d,%d],\"dtype\":"
                          "\"int64 raw act_t\",\"sha256\":\"%s\"},\"device_info\":{\"board\":\"%s\",\"pl\":"
                          "\"edgevit MoE-ViT accelerator (C-simulation)\",\"pl_clock_mhz\":%g,\"pe\":\"%dx%d\","
                          "\"counter_kind\":\"cycles\",\"cycles_total\":%llu,\"output_sha256\":\"%s\"},\"log\":\"%lu warm-up + %lu timed C-simulation runs\"}",
                          EV_TASK, EV_TOKENS - 1, outs, hex, ev_board_name(), (double)EV_CLOCK_MHZ, EV_PE_ROWS,
                          EV_PE_COLS, (unsigned long long)total, hex, (unsigned long)warmup, (unsigned long)runs);
    if (bad) return fail(io->msg, io->msg_cap, EV_ERR_INTERNAL, "result.json does not fit EV_AGENT_RESULT_BYTES");
    io->result_len = len;
    return 0;
}

}  // namespace

extern "C" const ev_runner ev_runner_impl = {
    "hls-csim", "\"" EV_FORMAT_SUFFIX_HLS "\"", "\"hls-csim\":\"edgevit MoE-ViT C-simulation\"",
    upload_begin, upload_write, upload_read, upload_finish, holds, run,
};
