/* The microcontroller runner: the board runs the model it was flashed with (edgevit_model.h, generated per
 * artifact by the MCU target). Nothing is uploaded: UPLOAD_BEGIN of format 4 (.evm) with the model's sha256 is
 * acknowledged as held in full (section 6.1's resume makes the host send no bytes); any other artifact is refused.
 *
 * RUN executes ev_model_run warmup + runs times on a deterministic input,
 *     input[i] = (int8_t)(((i * 73 + 41) & 0xFF) - 128)        for i < ev_model_input_bytes,
 * with the board's counter around every layer (ev_board_count: instructions under QEMU -icount), and reports
 * per layer {name, op, count, counter_kind} from the last timed run, the output's sha256, and the output bytes
 * as file 3. The counter the model calls also drives the BUSY heartbeat; the time that takes is subtracted, so a
 * layer's count is the layer's own. */
#include <stdio.h>
#include <string.h>

#include "edgevit_agent.h"
#include "edgevit_model.h"
#include "ev_sha256.h"

#ifndef EV_MODEL_ARENA_ALIGN
#define EV_MODEL_ARENA_ALIGN 16
#endif
#ifndef EV_MODEL_MAX_LAYERS
#define EV_MODEL_MAX_LAYERS 256
#endif
#ifndef EV_MODEL_MAX_INPUT
#define EV_MODEL_MAX_INPUT 16384
#endif

static int8_t input[EV_MODEL_MAX_INPUT] __attribute__((aligned(EV_MODEL_ARENA_ALIGN)));
static uint32_t counts[EV_MODEL_MAX_LAYERS];
static void (*beat)(void);
static uint32_t hook_cost;      /* counter ticks spent in the heartbeat, excluded from the layers' counts */

static int fail(char *msg, size_t cap, int code, const char *text) {
    snprintf(msg, cap, "%s", text);
    return -code;
}

static int upload_begin(uint8_t format, uint32_t size, const uint8_t sha256[32], uint32_t *held, char *msg,
                        size_t cap) {
    (void)size;
    char hex[65];
    ev_hex(ev_model_sha256, 32, hex);
    if (format != EV_FORMAT_MCU) {
        snprintf(msg, cap, "this board runs only the model it was flashed with (format 4, " EV_FORMAT_SUFFIX_MCU
                 ", sha256 %.16s...); it cannot take format %u", hex, format);
        return -EV_ERR_UNSUPPORTED_FORMAT;
    }
    if (memcmp(sha256, ev_model_sha256, 32) != 0) {
        snprintf(msg, cap, "this board runs model %s it was flashed with; flash the firmware built for your "
                 "artifact", hex);
        return -EV_ERR_UNSUPPORTED_FORMAT;
    }
    *held = size;
    return 0;
}

static int upload_write(uint32_t offset, const uint8_t *data, uint32_t n, char *msg, size_t cap) {
    (void)offset; (void)data; (void)n;
    return fail(msg, cap, EV_ERR_STORAGE, "this board stores no uploads: its model is in flash");
}

static int upload_read(uint32_t offset, uint8_t *dst, uint32_t n) {
    (void)offset; (void)dst; (void)n;
    return -1;
}

static void upload_finish(int ok) { (void)ok; }

static int holds(const uint8_t sha256[32]) { return memcmp(sha256, ev_model_sha256, 32) == 0; }

/* The counter the model calls between layers: also the heartbeat's hook. */
static uint32_t counter(void) {
    const uint32_t now = ev_board_count();
    if (beat) {
        beat();
        hook_cost += ev_board_count() - now;
    }
    return now - hook_cost;
}

static int run(const uint8_t sha256[32], uint32_t runs, uint32_t warmup, ev_run_io *io) {
    (void)sha256;
    if (ev_model_num_layers > EV_MODEL_MAX_LAYERS || ev_model_input_bytes > EV_MODEL_MAX_INPUT ||
        ev_model_output_bytes > io->output_cap)
        return fail(io->msg, io->msg_cap, EV_ERR_INTERNAL, "the model's layers or tensors exceed this build's "
                    "EV_MODEL_MAX_LAYERS / EV_MODEL_MAX_INPUT / EV_AGENT_OUTPUT_BYTES");
    for (uint32_t i = 0; i < ev_model_input_bytes; i++) input[i] = (int8_t)(((i * 73u + 41u) & 0xFFu) - 128);
    beat = io->heartbeat;
    char *j = io->result_json;
    const size_t cap = io->result_cap;
    size_t len = 0;
    int bad = ev_json_append(j, cap, &len, "{\"times_ms\":[");
    uint32_t total = 0;        /* newlib-nano printf has no %llu */
    for (uint32_t r = 0; r < warmup + runs; r++) {
        hook_cost = 0;
        const uint32_t t0 = ev_board_millis();
        const int rc = ev_model_run(input, (int8_t *)io->output, counts, counter);
        const uint32_t t1 = ev_board_millis();
        if (rc != 0) {
            beat = 0;
            snprintf(io->msg, io->msg_cap, "ev_model_run returned %d", rc);
            return -EV_ERR_RUN_FAILED;
        }
        if (r >= warmup) bad |= ev_json_append(j, cap, &len, "%s%lu", r > warmup ? "," : "", (unsigned long)(t1 - t0));
        io->heartbeat();
    }
    beat = 0;
    io->output_len = ev_model_output_bytes;
    uint8_t digest[32];
    char hex[65], model_hex[65];
    ev_sha256(io->output, io->output_len, digest);
    ev_hex(digest, 32, hex);
    ev_hex(ev_model_sha256, 32, model_hex);
    bad |= ev_json_append(j, cap, &len, "],\"load_ms\":0,\"op_profile\":[");
    for (uint32_t i = 0; i < ev_model_num_layers; i++) {
        total += counts[i];
        bad |= ev_json_append(j, cap, &len, "%s{\"name\":\"%s\",\"op\":\"%s\",\"count\":%lu,\"counter_kind\":\"%s\"}",
                              i ? "," : "", ev_model_layer_names[i], ev_model_layer_ops[i], (unsigned long)counts[i],
                              ev_board_counter_kind());
    }
    bad |= ev_json_append(j, cap, &len, "],\"count_total\":%lu,\"counter_kind\":\"%s\",\"output\":{\"bytes\":%lu,"
                          "\"dtype\":\"int8\",\"sha256\":\"%s\"},\"peak_memory_bytes\":%lu,\"device_info\":{\"board\":"
                          "\"%s\",\"model_sha256\":\"%s\",\"counter_kind\":\"%s\",\"count_total\":%lu,\"output_sha256\":\"%s\",\"input\":\"int8 (i*73+41)%%256-128\"},"
                          "\"log\":\"%lu warm-up + %lu timed runs\"}", (unsigned long)total,
                          ev_board_counter_kind(), (unsigned long)io->output_len, hex,
                          (unsigned long)ev_model_arena_bytes, ev_board_name(), model_hex, ev_board_counter_kind(),
                          (unsigned long)total, hex, (unsigned long)warmup, (unsigned long)runs);
    if (bad) return fail(io->msg, io->msg_cap, EV_ERR_INTERNAL, "result.json does not fit EV_AGENT_RESULT_BYTES");
    io->result_len = len;
    return 0;
}

const ev_runner ev_runner_impl = {
    "builtin-model", "\"" EV_FORMAT_SUFFIX_MCU "\"", "\"edgevit-mcu\":\"int8 kernels\"",
    upload_begin, upload_write, upload_read, upload_finish, holds, run,
};
