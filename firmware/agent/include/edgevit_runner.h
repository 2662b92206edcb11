/* edgevit_runner.h - what one agent build can run, and where its uploads go.
 *
 * A runner is one struct of callbacks (defined once per build as `ev_runner_impl`): runners/hls_csim.cpp (the
 * FPGA accelerator's C-simulation on the host: the upload is the weight image in "DDR") and
 * runners/builtin_model.c (a microcontroller running the model it was flashed with). Every callback that can
 * fail returns 0 (or a count) on success, or -EV_ERR_* (edgevit_protocol.h) after writing a message for people
 * into msg (cap bytes, NUL-terminated); the agent sends it as ERROR. */
#ifndef EDGEVIT_RUNNER_H
#define EDGEVIT_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "edgevit_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What RUN hands the runner, and where it puts what READ can fetch. */
typedef struct ev_run_io {
    /* Call between pieces of work (per layer is right): sends BUSY every EV_HEARTBEAT_MS and answers what
     * arrives on the line meanwhile (PING / the RUN's re-send: BUSY; anything else: ERROR BUSY). */
    void (*heartbeat)(void);
    char *result_json;      /* file 2 (result.json): the runner writes a JSON object here ... */
    size_t result_cap;
    size_t result_len;      /* ... and sets its length */
    uint8_t *output;        /* file 3 (output): the raw output tensor of the last execution; optional */
    size_t output_cap;
    size_t output_len;
    char *msg;              /* on failure: why */
    size_t msg_cap;
} ev_run_io;

typedef struct ev_runner {
    const char *name;           /* "hls-csim", "builtin-model": recorded in INFO's "agent" */
    const char *formats;        /* INFO's formats, as the inside of a JSON list: "\".bin\"" */
    const char *runtime;        /* INFO's runtime, as the inside of a JSON object: "\"hls-csim\":\"...\"" */
    /* UPLOAD_BEGIN: *held = bytes of this artifact (size, sha256) already stored from offset 0 (size: all). */
    int (*upload_begin)(uint8_t format, uint32_t size, const uint8_t sha256[32], uint32_t *held, char *msg,
                        size_t cap);
    /* UPLOAD_DATA: store n bytes at offset (the agent checked offset <= held and offset + n <= size). */
    int (*upload_write)(uint32_t offset, const uint8_t *data, uint32_t n, char *msg, size_t cap);
    /* Read back stored bytes for the sha256 check of UPLOAD_END. */
    int (*upload_read)(uint32_t offset, uint8_t *dst, uint32_t n);
    /* UPLOAD_END: ok = 1: the sha256 matched, keep the artifact as complete; ok = 0: discard the bytes. */
    void (*upload_finish)(int ok);
    /* Whether a complete artifact with this sha256 is held (RUN, and UPLOAD_BEGIN of a held artifact). */
    int (*holds)(const uint8_t sha256[32]);
    /* RUN: execute warmup + runs times; fill io->result_json (and io->output). */
    int (*run)(const uint8_t sha256[32], uint32_t runs, uint32_t warmup, ev_run_io *io);
} ev_runner;

extern const ev_runner ev_runner_impl;

/* snprintf-append to a JSON buffer; returns 0, or -1 once it no longer fits (the buffer stays terminated). */
int ev_json_append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* 64 lower-case hex digits of a sha256 digest into out[65]. */
void ev_hex(const uint8_t *digest, size_t n, char *out);

#ifdef __cplusplus
}
#endif

#endif
