/* edgevit_board.h - what the agent needs from a board (one implementation per firmware/boards/<name>/). */
#ifndef EDGEVIT_BOARD_H
#define EDGEVIT_BOARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The next byte from the line (0..255), or -1 if none arrived within timeout_ms (0: do not wait). */
int ev_board_uart_getc(uint32_t timeout_ms);
/* Write n bytes to the line; returns when they are handed to the UART (or dropped: nobody connected). */
void ev_board_uart_write(const uint8_t *p, size_t n);
/* A millisecond clock (wraps after 49 days; only differences are used). */
uint32_t ev_board_millis(void);
/* A free-running counter for per-layer costs, and what it counts: "cycles" or "instructions". */
uint32_t ev_board_count(void);
const char *ev_board_counter_kind(void);
/* Who this board is: its name (e.g. "mps2-an386") and the edgevit device profile it reports in INFO. */
const char *ev_board_name(void);
const char *ev_board_device(void);

#ifdef __cplusplus
}
#endif

#endif
