/* Vector table and reset handler for the Arm MPS2/MPS3 FPGA images QEMU models (Cortex-M4/M7/M55).
 * QEMU's -kernel loads the ELF and the core boots from the vector table at address 0 (VTOR reset value;
 * AN547: init-svtor 0x00000000, hw/arm/mps2-tz.c). */
#include <stdint.h>
#include <string.h>

#include "board.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top__;
int main(void);
void ev_systick_handler(void);
void ev_uart_rx_handler(void);

static void fault(void) {
    for (;;) __asm__ volatile("bkpt #0");     /* stop here: QEMU -d guest_errors / gdb shows where */
}

void Reset_Handler(void) {
    memcpy(&__data_start__, &__data_load__, (size_t)((char *)&__data_end__ - (char *)&__data_start__));
    memset(&__bss_start__, 0, (size_t)((char *)&__bss_end__ - (char *)&__bss_start__));
#if defined(__ARM_FP)
    /* CPACR: full access to CP10/CP11 (the FPU) before any floating-point instruction */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n isb");
#endif
    main();
    fault();
}

#define EV_NUM_IRQ (EV_UART0_RX_IRQ + 1)
typedef void (*vector_fn)(void);

__attribute__((section(".vectors"), used)) static const vector_fn vectors[16 + EV_NUM_IRQ] = {
    [0] = (vector_fn)(uintptr_t)&__stack_top__,
    [1] = Reset_Handler,
    [2] = fault,    /* NMI */
    [3] = fault,    /* HardFault */
    [4] = fault,    /* MemManage */
    [5] = fault,    /* BusFault */
    [6] = fault,    /* UsageFault */
    [7] = fault,    /* SecureFault (v8-M) */
    [15] = ev_systick_handler,
    [16 + EV_UART0_RX_IRQ] = ev_uart_rx_handler,
};
