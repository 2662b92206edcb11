/* Arm MPS3 with the AN547 FPGA image (Corstone SSE-300, Cortex-M55). Addresses and IRQs as QEMU's
 * hw/arm/mps2-tz.c models them (https://gitlab.com/qemu-project/qemu/-/blob/master/hw/arm/mps2-tz.c), which
 * follow Arm Application Note AN547 (https://developer.arm.com/documentation/dai0547/latest/): CMSDK UART0 at
 * 0x49303000 (apb_ppcexp2), RX interrupt 33; SYSCLK 32 MHz. The core boots secure with init-svtor 0. */
#ifndef EV_BOARD_H
#define EV_BOARD_H
#define EV_UART0_BASE 0x49303000u
#define EV_UART0_RX_IRQ 33
#endif
