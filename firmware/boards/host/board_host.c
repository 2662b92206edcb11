/* The host "board": the agent as a POSIX process. Its UART is a TCP socket (--listen HOST:PORT; port 0 picks a
 * free one, printed on stderr; pyserial reaches it as socket://HOST:PORT) or a serial device / pty (--serial PATH).
 * With a socket, a client that disconnects is a cable pulled out: the agent keeps its state (a partial upload
 * resumes) and waits for the next connection. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "edgevit_agent.h"

static int listen_fd = -1, line_fd = -1, is_socket = 0;
static const char *device = NULL;
static uint8_t in_buf[4096];
static size_t in_len, in_pos;

static void hang_up(void) {
    if (line_fd >= 0 && is_socket) {
        close(line_fd);
        line_fd = -1;
    }
    in_len = in_pos = 0;
}

static int wait_readable(int fd, uint32_t timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int rc;
    do rc = poll(&p, 1, (int)timeout_ms); while (rc < 0 && errno == EINTR);
    return rc > 0;
}

int ev_board_uart_getc(uint32_t timeout_ms) {
    if (in_pos < in_len) return in_buf[in_pos++];
    if (line_fd < 0) {      /* nobody on the line: wait for a connection */
        if (!wait_readable(listen_fd, timeout_ms)) return -1;
        line_fd = accept(listen_fd, NULL, NULL);
        if (line_fd < 0) return -1;
        int one = 1;
        setsockopt(line_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fprintf(stderr, "agent: a host connected\n");
        timeout_ms = 0;
    }
    if (!wait_readable(line_fd, timeout_ms)) return -1;
    const ssize_t n = read(line_fd, in_buf, sizeof in_buf);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            if (is_socket) fprintf(stderr, "agent: the host disconnected\n");
            hang_up();
        }
        return -1;
    }
    in_len = (size_t)n;
    in_pos = 1;
    return in_buf[0];
}

void ev_board_uart_write(const uint8_t *p, size_t n) {
    while (n && line_fd >= 0) {
        const ssize_t w = is_socket ? send(line_fd, p, n, MSG_NOSIGNAL) : write(line_fd, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            hang_up();      /* the cable is gone: the bytes are lost, as on a real line */
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

uint32_t ev_board_millis(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

#if defined(__x86_64__) || defined(__i386__)
uint32_t ev_board_count(void) {             /* the time-stamp counter: cycles of the TSC's constant clock */
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    (void)hi;
    return lo;
}
const char *ev_board_counter_kind(void) { return "cycles"; }
#else
uint32_t ev_board_count(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}
const char *ev_board_counter_kind(void) { return "nanoseconds"; }
#endif

const char *ev_board_name(void) { return "host"; }
const char *ev_board_device(void) { return device; }

static int usage(const char *why) {
    fprintf(stderr, "%s\nusage: edgevit-agent --device PROFILE (--listen HOST:PORT | --serial PATH) "
            "[--max-payload N]\n", why);
    return 2;
}

int main(int argc, char **argv) {
    const char *listen_at = NULL, *serial = NULL;
    unsigned long max_payload = EV_AGENT_MAX_PAYLOAD;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage("every option takes a value");
        if (!strcmp(argv[i], "--device")) device = argv[++i];
        else if (!strcmp(argv[i], "--listen")) listen_at = argv[++i];
        else if (!strcmp(argv[i], "--serial")) serial = argv[++i];
        else if (!strcmp(argv[i], "--max-payload")) max_payload = strtoul(argv[++i], NULL, 10);
        else return usage("unknown option");
    }
    if (!device || (!listen_at == !serial)) return usage("give --device and one of --listen / --serial");
    if (max_payload < EV_MIN_MAX_PAYLOAD || max_payload > EV_AGENT_MAX_PAYLOAD) {
        fprintf(stderr, "--max-payload must be between %u and %u (this build's buffer)\n", EV_MIN_MAX_PAYLOAD,
                EV_AGENT_MAX_PAYLOAD);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (listen_at) {
        char host[64];
        const char *colon = strrchr(listen_at, ':');
        if (!colon || (size_t)(colon - listen_at) >= sizeof host) return usage("--listen takes HOST:PORT");
        memcpy(host, listen_at, (size_t)(colon - listen_at));
        host[colon - listen_at] = 0;
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return usage("--listen needs an IPv4 address");
        listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listen_fd, 1) < 0) {
            fprintf(stderr, "cannot listen on %s: %s\n", listen_at, strerror(errno));
            return 2;
        }
        socklen_t len = sizeof addr;
        getsockname(listen_fd, (struct sockaddr *)&addr, &len);
        is_socket = 1;
        fprintf(stderr, "edgevit agent (%s) for %s listening on %s:%u\n", ev_runner_impl.name, device, host,
                ntohs(addr.sin_port));
    } else {
        line_fd = open(serial, O_RDWR | O_NOCTTY);
        if (line_fd < 0) {
            fprintf(stderr, "cannot open %s: %s\n", serial, strerror(errno));
            return 2;
        }
        struct termios t;
        if (tcgetattr(line_fd, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(line_fd, TCSANOW, &t);
        }
        fprintf(stderr, "edgevit agent (%s) for %s listening on %s\n", ev_runner_impl.name, device, serial);
    }
    ev_agent_init(&ev_runner_impl, (uint32_t)max_payload);
    ev_agent_serve();
    return 0;
}
