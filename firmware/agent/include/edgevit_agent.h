/* edgevit_agent.h - the serial agent of docs/serial-protocol.md in portable C99 (no malloc: static buffers).
 *
 * Buffer sizes are macros a build may override (-D...):
 *   EV_AGENT_MAX_PAYLOAD   the largest request payload accepted (advertised in INFO), >= 256
 *   EV_AGENT_TX_PAYLOAD    the largest answer payload (DATA chunks, RESULT, INFO), >= 256
 *   EV_AGENT_RESULT_BYTES  result.json (file 2)
 *   EV_AGENT_OUTPUT_BYTES  the output tensor (file 3)
 */
#ifndef EDGEVIT_AGENT_H
#define EDGEVIT_AGENT_H

#include <stdint.h>

#include "edgevit_board.h"
#include "edgevit_protocol.h"
#include "edgevit_runner.h"

#ifndef EV_AGENT_MAX_PAYLOAD
#define EV_AGENT_MAX_PAYLOAD 4096
#endif
#ifndef EV_AGENT_TX_PAYLOAD
#define EV_AGENT_TX_PAYLOAD 4096
#endif
#ifndef EV_AGENT_RESULT_BYTES
#define EV_AGENT_RESULT_BYTES 32768   /* ~100 bytes per layer row: a 133-layer micro ViT takes ~15 KB */
#endif
#ifndef EV_AGENT_OUTPUT_BYTES
#define EV_AGENT_OUTPUT_BYTES 4096
#endif
#ifndef EV_AGENT_VERSION
#define EV_AGENT_VERSION "0.1"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Start (or reset) the agent with a runner; max_payload: what INFO advertises (clamped to the buffers). */
void ev_agent_init(const ev_runner *runner, uint32_t max_payload);
/* Feed one received byte; answers go out through ev_board_uart_write. */
void ev_agent_rx_byte(uint8_t byte);
/* Do pending work (a RUN that arrived). Call after feeding bytes. */
void ev_agent_poll(void);
/* The main loop: read the UART forever, answer, run. */
void ev_agent_serve(void);
/* Counters for tests and logs. */
uint32_t ev_agent_damaged_frames(void);

#ifdef __cplusplus
}
#endif

#endif
