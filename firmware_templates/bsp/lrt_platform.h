/* lrt_platform.h - the only interface between the firmware's main.c and the target.
 *
 * One implementation per family is linked in by the build (toolchain/lrt/build.py):
 *   host/       stdio on fd 0/1 (the "host emulator"), binary, unbuffered;
 *   semihost/   ARM semihosting through newlib rdimon: read(0)/write(1) reach QEMU's
 *               stdin/stdout (the fast channel, with EOF);
 *   cmsdk/      CMSDK APB UART0 (mps2/mps3 boards), polled;
 *   stm32/      STM32F4 USART2 (ST-LINK virtual COM port on Nucleo-64), polled;
 *   nrf52/      nRF52 UART0 (J-Link virtual COM port on the DK), polled.
 * Cortex-M families share cortexm/ (startup, vector table, SysTick cycle counter).
 *
 * A byte stream has no framing: reads may return fewer bytes than asked; the wire
 * protocol (docs/PROTOCOL.md) does the framing. UARTs have no end of stream, so on them
 * lrt_platform_read never returns 0: the protocol's BYE ends a session there.
 */
#ifndef LRT_PLATFORM_H
#define LRT_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#include "lrt_board.h" /* generated per board: LRT_BOARD_*, LRT_NVM_*, LRT_CPU_HZ */

/* Line a firmware may print when it is up, on channels with no request/reply framing yet
 * (the Renode .robot suites and serial monitors wait for it; see emulate/renode.py). */
#define LRT_PLATFORM_READY "lrt: ready"
/* Line a firmware prints on such a channel, followed by its exit status (one digit) and a
 * newline, when it stops at boot instead of serving requests. */
#define LRT_PLATFORM_BOOT_FAILED "lrt: boot failed, status "

/* Bring up clocks/peripherals/stdio. Returns 0 or a negative lrt_err. Call once, first. */
int lrt_platform_init(void);

/* Block until at least one byte is available, then read up to len bytes.
 * Returns the number of bytes read (1..len), 0 at end of stream, negative lrt_err on error. */
long lrt_platform_read(uint8_t *buf, size_t len);

/* Write all len bytes (blocking). Returns len, or a negative lrt_err on error. */
long lrt_platform_write(const uint8_t *buf, size_t len);

/* Free-running 32-bit counter for cost measurements, wrapping modulo 2^32.
 * Unit: LRT_PLATFORM_CYCLES_HZ ticks per second (0 = no counter on this platform).
 * Cortex-M: SysTick on the core clock (under QEMU -icount shift=0 one tick is a fixed
 * number of instructions, see docs/TOOLCHAIN_FACTS.md); host: CLOCK_MONOTONIC in microseconds. */
uint32_t lrt_platform_cycles(void);

/* End the program with an exit status. Host/semihosting: the process/QEMU exits with it.
 * Real boards (no one to report to): flushes the UART and sleeps forever. */
void lrt_platform_exit(int code);

/* Read exactly len bytes unless the stream ends first. Returns len, the short count at
 * end of stream, or a negative lrt_err. */
static inline long lrt_platform_read_full(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        long n = lrt_platform_read(buf + got, len - got);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (long)got;
}

#endif /* LRT_PLATFORM_H */
