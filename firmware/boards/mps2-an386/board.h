/* Arm MPS2+ with the AN386 FPGA image (Cortex-M4). Addresses and IRQs as QEMU's hw/arm/mps2.c models them
 * (https://gitlab.com/qemu-project/qemu/-/blob/master/hw/arm/mps2.c), which follow Arm Application Note AN386
 * (https://developer.arm.com/documentation/dai0386/latest/): CMSDK UART0 at 0x40004000, RX interrupt 0
 * (TX 1); SYSCLK 25 MHz. */
#ifndef EV_BOARD_H
#define EV_BOARD_H
#define EV_UART0_BASE 0x40004000u
#define EV_UART0_RX_IRQ 0
#endif
