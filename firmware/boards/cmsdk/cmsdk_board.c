/* The board layer for Arm's MPS2 / MPS3 FPGA images (AN386 Cortex-M4, AN500 Cortex-M7, AN547 Cortex-M55) as
 * QEMU models them: UART0 is a CMSDK APB UART (Arm CoreLink SDK, DDI0479), the millisecond clock and the counter
 * come from SysTick on the processor clock (the machine's SYSCLK: 25 MHz on MPS2, QEMU hw/arm/mps2.c
 * SYSCLK_FRQ; 32 MHz on AN547, hw/arm/mps2-tz.c sysclk_frq).
 *
 * The counter counts instructions, not cycles: QEMU does not model DWT CYCCNT. Run with `-icount shift=0`: the
 * virtual clock then advances 2^0 = 1 ns per executed instruction, and SysTick counts that virtual clock at
 * EV_SYSCLK_HZ. So instructions = SysTick ticks x 1e9 / EV_SYSCLK_HZ (x40 at 25 MHz, x31.25 at 32 MHz), exact to
 * one tick (40 / 31.25 instructions). Idle time (WFI) also advances the clock, but the agent only reads the counter
 * around compute. */
#include <stdint.h>

#include "board.h"
#include "edgevit_agent.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART_DATA REG(EV_UART0_BASE + 0x00)
#define UART_STATE REG(EV_UART0_BASE + 0x04)       /* bit 0 TX full, bit 1 RX full */
#define UART_CTRL REG(EV_UART0_BASE + 0x08)        /* bit 0 TX enable, bit 1 RX enable, bit 3 RX interrupt */
#define UART_INTSTATUS REG(EV_UART0_BASE + 0x0C)   /* write 1 to clear; bit 1 RX */
#define UART_BAUDDIV REG(EV_UART0_BASE + 0x10)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 0xE000E100u

#define TICKS_PER_MS (EV_SYSCLK_HZ / 1000u)

static volatile uint32_t ms_count;

void ev_systick_handler(void) { ms_count++; }

void ev_uart_rx_handler(void) { UART_INTSTATUS = 2u; }     /* only wakes the core from WFI; the loop reads */

static void board_init(void) {
    UART_BAUDDIV = EV_SYSCLK_HZ / 115200u;                 /* QEMU ignores the rate; hardware needs one */
    UART_CTRL = 0x1u | 0x2u | 0x8u;
    REG(NVIC_ISER0 + 4u * (EV_UART0_RX_IRQ / 32u)) = 1u << (EV_UART0_RX_IRQ % 32u);
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;                                       /* processor clock, interrupt, enable */
}

int ev_board_uart_getc(uint32_t timeout_ms) {
    const uint32_t start = ms_count;
    while (!(UART_STATE & 2u)) {
        if (ms_count - start >= timeout_ms) return -1;
        __asm__ volatile("wfi");                           /* a byte (UART IRQ) or the next ms (SysTick) */
    }
    return (int)(UART_DATA & 0xFFu);
}

void ev_board_uart_write(const uint8_t *p, size_t n) {
    while (n--) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = *p++;
    }
}

uint32_t ev_board_millis(void) { return ms_count; }

uint32_t ev_board_count(void) {
    uint32_t ms, val;
    do {        /* a SysTick wrap between the two reads shows as a changed ms_count: read again */
        ms = ms_count;
        val = SYST_CVR;
    } while (ms != ms_count);
    const uint64_t ticks = (uint64_t)ms * TICKS_PER_MS + (TICKS_PER_MS - 1u - val);
    return (uint32_t)(ticks * 1000000000ull / EV_SYSCLK_HZ);
}

const char *ev_board_counter_kind(void) { return "instructions"; }
const char *ev_board_name(void) { return EV_BOARD_NAME; }
const char *ev_board_device(void) { return EV_DEVICE; }

int main(void) {
    board_init();
    ev_agent_init(&ev_runner_impl, EV_AGENT_MAX_PAYLOAD);
    ev_agent_serve();
    return 0;
}
