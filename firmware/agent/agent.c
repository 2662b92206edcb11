/* The agent's state machine (docs/serial-protocol.md sections 3-6), answer for answer the Python reference
 * agent's (edgevit/links/serial/agent.py): HELLO negotiation, NAK for damaged frames, the remembered last answer
 * re-sent for a duplicate request (section 5.1), resumable upload with a sha256 check, RUN with BUSY heartbeats
 * from the runner's per-layer hook (no threads), RESULT JSON via snprintf, READ/DATA, BYE. */
#include "edgevit_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ev_crc.h"
#include "ev_frames.h"
#include "ev_sha256.h"

#if EV_AGENT_MAX_PAYLOAD < EV_MIN_MAX_PAYLOAD || EV_AGENT_TX_PAYLOAD < EV_MIN_MAX_PAYLOAD
#error "the protocol needs payload buffers of at least 256 bytes"
#endif

static const ev_runner *R;
static uint32_t max_payload;                                   /* advertised in INFO */
static uint8_t rx_buf[EV_AGENT_MAX_PAYLOAD + EV_OVERHEAD];
static ev_decoder dec;
static uint8_t tx[EV_AGENT_TX_PAYLOAD + EV_OVERHEAD];          /* the last answer, kept for re-sends */
static size_t tx_len;
static uint8_t beat_frame[EV_OVERHEAD + 4];                    /* BUSY / NAK: not remembered as answers */
static uint8_t version = EV_MIN_VERSION;
static uint32_t host_max = EV_MIN_MAX_PAYLOAD;

static struct { int valid; uint16_t seq; uint8_t type; uint32_t crc; } last;     /* the last request handled */
static struct { int active; uint8_t sha[32]; uint32_t size, held; uint8_t format; } up;
static struct {
    int pending, active;
    uint16_t seq;
    uint32_t crc, runs, warmup, started, last_beat;
    uint8_t sha[32];
} run;
static char result_json[EV_AGENT_RESULT_BYTES];
static uint8_t output_buf[EV_AGENT_OUTPUT_BYTES];
static size_t result_len, output_len;
static int have_files;

/* -- helpers ------------------------------------------------------------------------------------------------ */
int ev_json_append(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return -1;
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *len) {
        buf[*len] = 0;                  /* keep what fitted before this piece */
        return -1;
    }
    *len += (size_t)n;
    return 0;
}

void ev_hex(const uint8_t *digest, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[2 * n] = 0;
}

static uint32_t answer_cap(void) {      /* the largest payload we may send: the host's limit and our buffer */
    return host_max < EV_AGENT_TX_PAYLOAD ? host_max : EV_AGENT_TX_PAYLOAD;
}

static uint8_t *payload(void) { return tx + EV_HEADER_SIZE; }

/* Send the answer whose payload is in tx and remember it for re-sends of (seq, type, crc). */
static void answer(uint8_t type, uint16_t seq, uint32_t len, uint8_t req_type, uint32_t req_crc) {
    tx_len = ev_frame_finish(tx, version, type, seq, (uint16_t)len);
    ev_board_uart_write(tx, tx_len);
    last.valid = 1;
    last.seq = seq;
    last.type = req_type;
    last.crc = req_crc;
}

static uint32_t ack(uint32_t value) {
    ev_wr32(payload(), value);
    return 4;
}

/* An ERROR payload: code + text; returns its length. */
static uint32_t error_text(uint16_t code, const char *fmt, ...) {
    ev_wr16(payload(), code);
    va_list ap;
    va_start(ap, fmt);
    const uint32_t room = answer_cap() - 2;
    int n = vsnprintf((char *)payload() + 2, room, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((uint32_t)n >= room) n = (int)room - 1;
    return 2u + (uint32_t)n;
}

static void send_small(uint8_t type, uint16_t seq, const uint8_t *p, uint16_t n) {
    memcpy(beat_frame + EV_HEADER_SIZE, p, n);
    ev_board_uart_write(beat_frame, ev_frame_finish(beat_frame, version, type, seq, n));
}

static void beat(uint16_t seq) {
    uint8_t p[4];
    run.last_beat = ev_board_millis();
    ev_wr32(p, run.last_beat - run.started);
    send_small(EV_MSG_BUSY, seq, p, 4);
}

static int memeq0(const uint8_t *a, const uint8_t *b, size_t n) { return memcmp(a, b, n) == 0; }

/* -- requests: each returns the answer's type and sets *len; 0 = no answer now (RUN) ----------------------- */
#define REFUSE(code, ...) do { *type = EV_MSG_ERROR; *len = error_text((code), __VA_ARGS__); return; } while (0)

static void on_hello(const ev_frame *f, uint8_t *type, uint32_t *len) {
    const uint8_t low = f->payload[EV_HELLO_OFF_0], high = f->payload[EV_HELLO_OFF_1];
    const uint16_t host = ev_rd16(f->payload + EV_HELLO_OFF_2);
    const uint8_t chosen = high < EV_PROTOCOL_VERSION ? high : EV_PROTOCOL_VERSION;
    const uint8_t floor_ = low > EV_MIN_VERSION ? low : EV_MIN_VERSION;
    if (chosen < floor_)
        REFUSE(EV_ERR_UNSUPPORTED_VERSION, "this agent speaks protocol versions %u-%u; the host offered %u-%u",
               EV_MIN_VERSION, EV_PROTOCOL_VERSION, low, high);
    if (host < EV_MIN_MAX_PAYLOAD)
        REFUSE(EV_ERR_BAD_PAYLOAD, "host max payload %u is below %u", host, EV_MIN_MAX_PAYLOAD);
    version = chosen;
    host_max = host;
    last.valid = 0;
    uint8_t *p = payload();
    p[0] = chosen;
    p[1] = 0;
    ev_wr16(p + 2, (uint16_t)max_payload);
    size_t n = 0;
    char *json = (char *)p + 4;
    const size_t cap = answer_cap() - 4;
    ev_json_append(json, cap, &n, "{\"device\":\"%s\",\"agent\":\"edgevit-c %s (%s)\",\"board\":\"%s\","
                   "\"formats\":[%s],\"runtime\":{%s},\"counter\":\"%s\",\"os\":\"none\",\"machine\":\"%s\"}",
                   ev_board_device(), EV_AGENT_VERSION, R->name, ev_board_name(), R->formats, R->runtime,
                   ev_board_counter_kind(), ev_board_name());
    *type = EV_MSG_INFO;
    *len = 4u + (uint32_t)n;
}

static void on_upload_begin(const ev_frame *f, uint8_t *type, uint32_t *len) {
    const uint32_t size = ev_rd32(f->payload + EV_UPLOAD_BEGIN_OFF_0);
    const uint8_t format = f->payload[EV_UPLOAD_BEGIN_OFF_1];
    const uint8_t *sha = f->payload + EV_UPLOAD_BEGIN_OFF_2;
    char msg[160];
    uint32_t held = 0;
    const int rc = R->upload_begin(format, size, sha, &held, msg, sizeof msg);
    if (rc < 0) REFUSE((uint16_t)-rc, "%s", msg);
    if (held > size) held = 0;
    up.active = 1;
    memcpy(up.sha, sha, 32);
    up.size = size;
    up.held = R->holds(sha) ? size : held;
    up.format = format;
    *type = EV_MSG_ACK;
    *len = ack(up.held);
}

static void on_upload_data(const ev_frame *f, uint8_t *type, uint32_t *len) {
    const uint32_t offset = ev_rd32(f->payload + EV_UPLOAD_DATA_OFF_0);
    const uint32_t n = f->len - EV_UPLOAD_DATA_SIZE;
    if (!up.active) REFUSE(EV_ERR_BAD_OFFSET, "no upload in progress; send UPLOAD_BEGIN first");
    if (offset > up.held || (uint64_t)offset + n > up.size)
        REFUSE(EV_ERR_BAD_OFFSET, "chunk at %lu+%lu does not fit: holding %lu of %lu bytes; send from %lu",
               (unsigned long)offset, (unsigned long)n, (unsigned long)up.held, (unsigned long)up.size,
               (unsigned long)up.held);
    char msg[160];
    const int rc = R->upload_write(offset, f->payload + EV_UPLOAD_DATA_SIZE, n, msg, sizeof msg);
    if (rc < 0) REFUSE((uint16_t)-rc, "%s", msg);
    if (offset + n > up.held) up.held = offset + n;
    *type = EV_MSG_ACK;
    *len = ack(up.held);
}

static void on_upload_end(const ev_frame *f, uint8_t *type, uint32_t *len) {
    (void)f;
    if (!up.active) REFUSE(EV_ERR_BAD_OFFSET, "no upload in progress; send UPLOAD_BEGIN first");
    if (!R->holds(up.sha)) {
        if (up.held != up.size)
            REFUSE(EV_ERR_BAD_OFFSET, "upload incomplete: holding %lu of %lu bytes", (unsigned long)up.held,
                   (unsigned long)up.size);
        ev_sha256_ctx ctx;
        uint8_t chunk[256], digest[32];
        ev_sha256_init(&ctx);
        for (uint32_t at = 0; at < up.size;) {
            const uint32_t n = up.size - at < sizeof chunk ? up.size - at : (uint32_t)sizeof chunk;
            if (R->upload_read(at, chunk, n) < 0) REFUSE(EV_ERR_STORAGE, "storage: cannot read back offset %lu",
                                                        (unsigned long)at);
            ev_sha256_update(&ctx, chunk, n);
            at += n;
        }
        ev_sha256_final(&ctx, digest);
        if (!memeq0(digest, up.sha, 32)) {
            char got[65], want[65];
            ev_hex(digest, 32, got);
            ev_hex(up.sha, 32, want);
            R->upload_finish(0);
            up.active = 0;
            REFUSE(EV_ERR_HASH_MISMATCH, "the %lu bytes received hash to %.16s..., not %.16s...; discarded, upload "
                   "again", (unsigned long)up.size, got, want);
        }
        R->upload_finish(1);
    }
    *type = EV_MSG_ACK;
    *len = ack(up.size);
}

static void on_run(const ev_frame *f, uint8_t *type, uint32_t *len) {
    const uint32_t runs = ev_rd32(f->payload + EV_RUN_OFF_0), warmup = ev_rd32(f->payload + EV_RUN_OFF_1);
    const uint16_t threads = ev_rd16(f->payload + EV_RUN_OFF_2);
    const uint8_t *sha = f->payload + EV_RUN_OFF_3;
    if (!R->holds(sha)) {
        char hex[65];
        ev_hex(sha, 32, hex);
        REFUSE(EV_ERR_NOT_UPLOADED, "no artifact with sha256 %.16s... here; upload it", hex);
    }
    if (runs < 1 || threads < 1)
        REFUSE(EV_ERR_BAD_PAYLOAD, "runs (%lu) and threads (%u) must be at least 1", (unsigned long)runs, threads);
    run.pending = 1;            /* executed by ev_agent_poll, outside the decoder (its buffer holds this frame) */
    run.active = 1;
    run.seq = f->seq;
    run.crc = ev_crc32(f->payload, f->len);
    run.runs = runs;
    run.warmup = warmup;
    memcpy(run.sha, sha, 32);
    run.started = ev_board_millis();
    have_files = 0;
    beat(f->seq);
    *type = 0;
}

static void on_read(const ev_frame *f, uint8_t *type, uint32_t *len) {
    const uint8_t id = f->payload[EV_READ_OFF_0];
    const uint16_t want = ev_rd16(f->payload + EV_READ_OFF_1);
    const uint32_t offset = ev_rd32(f->payload + EV_READ_OFF_2);
    const uint8_t *data = NULL;
    size_t size = 0;
    if (have_files && id == EV_FILE_RESULT) {
        data = (const uint8_t *)result_json;
        size = result_len;
    } else if (have_files && id == EV_FILE_OUTPUT && output_len) {
        data = output_buf;
        size = output_len;
    }
    if (data == NULL) REFUSE(EV_ERR_NO_RESULT, "no file %u from a finished run here; RUN first", id);
    if (offset > size)
        REFUSE(EV_ERR_BAD_OFFSET, "offset %lu is past the end of file %u (%lu bytes)", (unsigned long)offset, id,
               (unsigned long)size);
    uint32_t n = (uint32_t)(size - offset);
    if (n > want) n = want;
    if (n > answer_cap() - 4) n = answer_cap() - 4;
    ev_wr32(payload(), offset);
    memcpy(payload() + 4, data + offset, n);
    *type = EV_MSG_DATA;
    *len = 4 + n;
}

static void on_ping(const ev_frame *f, uint8_t *type, uint32_t *len) {
    (void)f;
    *type = EV_MSG_ACK;
    *len = ack(0);
}

typedef void (*handler_fn)(const ev_frame *, uint8_t *, uint32_t *);

static handler_fn handler_for(uint8_t type, uint32_t *size, int *fixed) {
    switch (type) {
#define CASE(MSG, fn) case EV_MSG_##MSG: *size = EV_##MSG##_SIZE; *fixed = EV_##MSG##_FIXED; return fn;
        CASE(HELLO, on_hello)
        CASE(PING, on_ping)
        CASE(BYE, on_ping)
        CASE(UPLOAD_BEGIN, on_upload_begin)
        CASE(UPLOAD_DATA, on_upload_data)
        CASE(UPLOAD_END, on_upload_end)
        CASE(RUN, on_run)
        CASE(READ, on_read)
#undef CASE
        default: return NULL;
    }
}

static const char *msg_name(uint8_t type) {
    switch (type) {
        case EV_MSG_HELLO: return "HELLO";
        case EV_MSG_PING: return "PING";
        case EV_MSG_BYE: return "BYE";
        case EV_MSG_UPLOAD_BEGIN: return "UPLOAD_BEGIN";
        case EV_MSG_UPLOAD_DATA: return "UPLOAD_DATA";
        case EV_MSG_UPLOAD_END: return "UPLOAD_END";
        case EV_MSG_RUN: return "RUN";
        case EV_MSG_READ: return "READ";
        default: return "?";
    }
}

static void on_frame(const ev_frame *f) {
    const uint32_t crc = ev_crc32(f->payload, f->len);
    if (run.active && ((f->seq == run.seq && f->type == EV_MSG_RUN && crc == run.crc) || f->type == EV_MSG_PING)) {
        beat(f->seq);       /* the host re-sent its RUN, or asks if we are there: still running */
        return;
    }
    if (last.valid && f->type != EV_MSG_HELLO && f->seq == last.seq && f->type == last.type && crc == last.crc) {
        ev_board_uart_write(tx, tx_len);    /* a re-sent request: the same answer, not done twice */
        return;
    }
    uint8_t type = 0;
    uint32_t len = 0, size = 0;
    int fixed = 0;
    handler_fn fn = handler_for(f->type, &size, &fixed);
    if (run.active) {
        type = EV_MSG_ERROR;
        len = error_text(EV_ERR_BUSY, "a run is in progress (%lu s); wait for its RESULT",
                         (unsigned long)((ev_board_millis() - run.started) / 1000));
    } else if (f->type != EV_MSG_HELLO && f->version != version) {
        type = EV_MSG_ERROR;
        len = error_text(EV_ERR_UNSUPPORTED_VERSION, "frame in version %u; this session agreed on version %u (send "
                         "HELLO)", f->version, version);
    } else if (fn == NULL) {
        type = EV_MSG_ERROR;
        len = error_text(EV_ERR_UNKNOWN_TYPE, "this agent does not take message type 0x%02x", f->type);
    } else if (f->len < size || (fixed && f->len != size)) {
        type = EV_MSG_ERROR;
        len = error_text(EV_ERR_BAD_PAYLOAD, "%s payload is %u bytes; its layout needs %s %lu", msg_name(f->type),
                         f->len, fixed ? "exactly" : "at least", (unsigned long)size);
    } else {
        fn(f, &type, &len);
        if (type == 0) return;      /* RUN: answered by heartbeats, then RESULT */
    }
    answer(type, f->seq, len, f->type, crc);
}

static void on_damaged(uint8_t type, uint16_t seq, uint8_t reason) {
    (void)type;
    send_small(EV_MSG_NAK, seq, &reason, 1);
}

/* -- running -------------------------------------------------------------------------------------------------- */
static void heartbeat(void) {
    int c;
    while ((c = ev_board_uart_getc(0)) >= 0) ev_decoder_feed(&dec, (uint8_t)c);   /* PING / re-sent RUN / BUSY */
    if (ev_board_millis() - run.last_beat >= EV_HEARTBEAT_MS) beat(run.seq);
}

static void execute_run(void) {
    char msg[200];
    ev_run_io io;
    memset(&io, 0, sizeof io);
    io.heartbeat = heartbeat;
    io.result_json = result_json;
    io.result_cap = sizeof result_json;
    io.output = output_buf;
    io.output_cap = sizeof output_buf;
    io.msg = msg;
    io.msg_cap = sizeof msg;
    msg[0] = 0;
    run.pending = 0;
    const int rc = R->run(run.sha, run.runs, run.warmup, &io);
    const uint32_t elapsed = ev_board_millis() - run.started;
    run.active = 0;
    uint8_t type;
    uint32_t len;
    if (rc < 0) {
        type = EV_MSG_ERROR;
        len = error_text((uint16_t)-rc, "%s", msg[0] ? msg : "the run failed");
    } else {
        result_len = io.result_len;
        output_len = io.output_len;
        have_files = 1;
        char sha[65];
        size_t n = 0;
        char *json = (char *)payload();
        const size_t cap = answer_cap();
        uint8_t digest[32];
        ev_sha256((const uint8_t *)result_json, result_len, digest);
        ev_hex(digest, 32, sha);
        ev_json_append(json, cap, &n, "{\"elapsed_ms\":%lu,\"files\":[{\"id\":%u,\"name\":\"result.json\","
                       "\"size\":%lu,\"sha256\":\"%s\"}", (unsigned long)elapsed, EV_FILE_RESULT,
                       (unsigned long)result_len, sha);
        if (output_len) {
            ev_sha256(output_buf, output_len, digest);
            ev_hex(digest, 32, sha);
            ev_json_append(json, cap, &n, ",{\"id\":%u,\"name\":\"output\",\"size\":%lu,\"sha256\":\"%s\"}",
                           EV_FILE_OUTPUT, (unsigned long)output_len, sha);
        }
        ev_json_append(json, cap, &n, "]}");
        type = EV_MSG_RESULT;
        len = (uint32_t)n;
    }
    answer(type, run.seq, len, EV_MSG_RUN, run.crc);
}

/* -- the loop ---------------------------------------------------------------------------------------------- */
void ev_agent_init(const ev_runner *runner, uint32_t advertised) {
    R = runner;
    if (advertised < EV_MIN_MAX_PAYLOAD) advertised = EV_MIN_MAX_PAYLOAD;
    if (advertised > EV_AGENT_MAX_PAYLOAD) advertised = EV_AGENT_MAX_PAYLOAD;
    max_payload = advertised;
    memset(&dec, 0, sizeof dec);
    dec.buf = rx_buf;
    dec.max_payload = max_payload;
    dec.on_frame = on_frame;
    dec.on_damaged = on_damaged;
    memset(&last, 0, sizeof last);
    memset(&up, 0, sizeof up);
    memset(&run, 0, sizeof run);
    version = EV_MIN_VERSION;
    host_max = EV_MIN_MAX_PAYLOAD;
    have_files = 0;
}

void ev_agent_rx_byte(uint8_t byte) { ev_decoder_feed(&dec, byte); }

void ev_agent_poll(void) {
    if (run.pending) execute_run();
}

uint32_t ev_agent_damaged_frames(void) { return dec.damaged; }

void ev_agent_serve(void) {
    for (;;) {
        const int c = ev_board_uart_getc(100);
        if (c >= 0) ev_agent_rx_byte((uint8_t)c);
        ev_agent_poll();
    }
}
