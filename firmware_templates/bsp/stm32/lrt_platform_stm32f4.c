/* lrt_platform_stm32f4.c - platform I/O for STM32F4 Nucleo-64 boards: USART2 on PA2/PA3,
 * which the on-board ST-LINK exposes as a USB virtual COM port. Polled, 8N1.
 *
 * The core stays on the reset clock (HSI, LRT_BOARD_CPU_HZ = 16 MHz): the firmware's cost
 * is measured in cycles, and leaving the PLL alone keeps this file free of part-specific
 * clock trees. Renode's stm32f4 platform models the same USART2 registers.
 */
#include "lrt_common.h"
#include "lrt_platform.h"

#define LRT_REG(addr) (*(volatile uint32_t *)(addr))
#define LRT_RCC_AHB1ENR LRT_REG(0x40023830u)
#define LRT_RCC_APB1ENR LRT_REG(0x40023840u)
#define LRT_GPIOA_MODER LRT_REG(0x40020000u)
#define LRT_GPIOA_AFRL LRT_REG(0x40020020u)
#define LRT_USART_SR LRT_REG(LRT_BOARD_UART_BASE + 0x00u)
#define LRT_USART_DR LRT_REG(LRT_BOARD_UART_BASE + 0x04u)
#define LRT_USART_BRR LRT_REG(LRT_BOARD_UART_BASE + 0x08u)
#define LRT_USART_CR1 LRT_REG(LRT_BOARD_UART_BASE + 0x0Cu)
#define LRT_USART_SR_RXNE (1u << 5)
#define LRT_USART_SR_TC (1u << 6)
#define LRT_USART_SR_TXE (1u << 7)

void lrt_cycles_start(void);

int lrt_platform_init(void)
{
    lrt_cycles_start();
    LRT_RCC_AHB1ENR |= 1u << 0;  /* GPIOA */
    LRT_RCC_APB1ENR |= 1u << 17; /* USART2 */
    /* PA2 (TX), PA3 (RX): alternate function 7. */
    LRT_GPIOA_MODER = (LRT_GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);
    LRT_GPIOA_AFRL = (LRT_GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);
    LRT_USART_BRR = (LRT_BOARD_UART_CLOCK_HZ + LRT_BOARD_UART_BAUD / 2u) / LRT_BOARD_UART_BAUD;
    LRT_USART_CR1 = (1u << 13) | (1u << 3) | (1u << 2); /* UE | TE | RE */
    return LRT_OK;
}

long lrt_platform_read(uint8_t *buf, size_t len)
{
    size_t n = 0;
    if (len == 0) {
        return 0;
    }
    while (!(LRT_USART_SR & LRT_USART_SR_RXNE)) {
    }
    while (n < len && (LRT_USART_SR & LRT_USART_SR_RXNE)) {
        buf[n++] = (uint8_t)LRT_USART_DR;
    }
    return (long)n;
}

long lrt_platform_write(const uint8_t *buf, size_t len)
{
    size_t i;
    for (i = 0; i < len; ++i) {
        while (!(LRT_USART_SR & LRT_USART_SR_TXE)) {
        }
        LRT_USART_DR = buf[i];
    }
    return (long)len;
}

void lrt_platform_exit(int code)
{
    (void)code;
    while (!(LRT_USART_SR & LRT_USART_SR_TC)) {
    }
    for (;;) {
        __asm__ volatile("wfi");
    }
}
