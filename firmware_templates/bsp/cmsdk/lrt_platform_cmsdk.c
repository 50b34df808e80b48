/* lrt_platform_cmsdk.c - platform I/O over the CMSDK APB UART (mps2/mps3 UART0), polled.
 *
 * This is the serial path real boards use, runnable in QEMU with `-serial stdio`
 * (slow there: 7-16 KB/s, so tests push little data through it). Under QEMU the build
 * also links semihosting, only so that lrt_platform_exit can end the emulator.
 */
#include <stdlib.h>

#include "lrt_common.h"
#include "lrt_platform.h"

#define LRT_UART_DATA (*(volatile uint32_t *)(LRT_BOARD_UART_BASE + 0x00u))
#define LRT_UART_STATE (*(volatile uint32_t *)(LRT_BOARD_UART_BASE + 0x04u))
#define LRT_UART_CTRL (*(volatile uint32_t *)(LRT_BOARD_UART_BASE + 0x08u))
#define LRT_UART_BAUDDIV (*(volatile uint32_t *)(LRT_BOARD_UART_BASE + 0x10u))
#define LRT_UART_TX_FULL 0x1u
#define LRT_UART_RX_FULL 0x2u

void lrt_cycles_start(void);

int lrt_platform_init(void)
{
    lrt_cycles_start();
    /* BAUDDIV must be >= 16 or the UART stays silent. */
    LRT_UART_BAUDDIV = LRT_BOARD_UART_CLOCK_HZ / LRT_BOARD_UART_BAUD;
    LRT_UART_CTRL = 0x3u; /* TX and RX enable, no interrupts */
    return LRT_OK;
}

long lrt_platform_read(uint8_t *buf, size_t len)
{
    size_t n = 0;
    if (len == 0) {
        return 0;
    }
    while (!(LRT_UART_STATE & LRT_UART_RX_FULL)) {
    }
    /* Take what has arrived; the one-byte RX holding register means this is usually 1. */
    while (n < len && (LRT_UART_STATE & LRT_UART_RX_FULL)) {
        buf[n++] = (uint8_t)LRT_UART_DATA;
    }
    return (long)n;
}

long lrt_platform_write(const uint8_t *buf, size_t len)
{
    size_t i;
    for (i = 0; i < len; ++i) {
        while (LRT_UART_STATE & LRT_UART_TX_FULL) {
        }
        LRT_UART_DATA = buf[i];
    }
    return (long)len;
}

void lrt_platform_exit(int code)
{
    while (LRT_UART_STATE & LRT_UART_TX_FULL) {
    }
#if LRT_SEMIHOSTING
    exit(code);
#else
    (void)code;
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}
