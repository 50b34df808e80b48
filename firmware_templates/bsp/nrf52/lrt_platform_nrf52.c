/* lrt_platform_nrf52.c - platform I/O for nRF52 DKs: UART0 (legacy, non-DMA) on the pins
 * the on-board J-Link exposes as a virtual COM port (nRF52840-DK: TX P0.06, RX P0.08).
 * Polled, 8N1. Renode's nrf52840 platform models UART0 at the same address.
 */
#include "lrt_common.h"
#include "lrt_platform.h"

#define LRT_REG(off) (*(volatile uint32_t *)(LRT_BOARD_UART_BASE + (off)))
#define LRT_UART_STARTRX LRT_REG(0x000u)
#define LRT_UART_STARTTX LRT_REG(0x008u)
#define LRT_UART_RXDRDY LRT_REG(0x108u)
#define LRT_UART_TXDRDY LRT_REG(0x11Cu)
#define LRT_UART_ENABLE LRT_REG(0x500u)
#define LRT_UART_PSEL_TXD LRT_REG(0x50Cu)
#define LRT_UART_PSEL_RXD LRT_REG(0x514u)
#define LRT_UART_RXD LRT_REG(0x518u)
#define LRT_UART_TXD LRT_REG(0x51Cu)
#define LRT_UART_BAUDRATE LRT_REG(0x524u)
#define LRT_UART_BAUD_115200 0x01D7E000u

#if LRT_BOARD_UART_BAUD != 115200
#error "nrf52 UART: only 115200 baud is wired (BAUDRATE takes a code, not a divisor)"
#endif

#ifndef LRT_BOARD_UART_TX_PIN
#define LRT_BOARD_UART_TX_PIN 6
#endif
#ifndef LRT_BOARD_UART_RX_PIN
#define LRT_BOARD_UART_RX_PIN 8
#endif

void lrt_cycles_start(void);

int lrt_platform_init(void)
{
    lrt_cycles_start();
    LRT_UART_PSEL_TXD = LRT_BOARD_UART_TX_PIN;
    LRT_UART_PSEL_RXD = LRT_BOARD_UART_RX_PIN;
    /* The legacy UART takes a baud-rate code, not a divisor; only 115200 is wired here. */
    LRT_UART_BAUDRATE = LRT_UART_BAUD_115200;
    LRT_UART_ENABLE = 4u;
    LRT_UART_STARTRX = 1u;
    LRT_UART_STARTTX = 1u;
    return LRT_OK;
}

long lrt_platform_read(uint8_t *buf, size_t len)
{
    if (len == 0) {
        return 0;
    }
    while (LRT_UART_RXDRDY == 0u) {
    }
    LRT_UART_RXDRDY = 0u;
    buf[0] = (uint8_t)LRT_UART_RXD;
    return 1;
}

long lrt_platform_write(const uint8_t *buf, size_t len)
{
    size_t i;
    for (i = 0; i < len; ++i) {
        LRT_UART_TXDRDY = 0u;
        LRT_UART_TXD = buf[i];
        while (LRT_UART_TXDRDY == 0u) {
        }
    }
    return (long)len;
}

void lrt_platform_exit(int code)
{
    (void)code;
    for (;;) {
        __asm__ volatile("wfi");
    }
}
