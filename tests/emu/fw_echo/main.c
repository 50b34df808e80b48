/* Test firmware for the build system and the runners (not the LRT firmware).
 *
 * Prints LRT_PLATFORM_READY and a newline, then serves commands until end of stream:
 *   'E' u32 n, n bytes  -> n bytes, each b*7+3 (mod 256)    byte transport round trip
 *   'S' u32 n           -> u32 cycles spent in lrt_test_spin(n)   cost measurement
 *   'I'                 -> board name, '\n'
 *   'X' u8 code         -> exits with that status           exit status propagation
 * Integers are little-endian. At end of stream it exits with status 0.
 */
#include <stdint.h>

#include "lrt_common.h"
#include "lrt_platform.h"

#define ECHO_CHUNK 256u

void lrt_test_spin(uint32_t n);

/* Exactly 2 instructions per iteration plus the return on ARM, so an instruction count
 * over this function's address range is 2n + 1 (n >= 1). */
__attribute__((noinline)) void lrt_test_spin(uint32_t n)
{
#if defined(__arm__)
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#else
    volatile uint32_t i;
    for (i = 0; i < n; ++i) {
    }
#endif
}

static int put(const void *buf, size_t len)
{
    return lrt_platform_write((const uint8_t *)buf, len) == (long)len ? 0 : -1;
}

static int get_u32(uint32_t *v)
{
    uint8_t b[4];
    if (lrt_platform_read_full(b, 4) != 4) {
        return -1;
    }
    *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    return 0;
}

static int cmd_echo(void)
{
    uint8_t buf[ECHO_CHUNK];
    uint32_t left;
    if (get_u32(&left) != 0) {
        return -1;
    }
    while (left > 0) {
        long n = lrt_platform_read(buf, left < ECHO_CHUNK ? left : ECHO_CHUNK);
        long i;
        if (n <= 0) {
            return -1;
        }
        for (i = 0; i < n; ++i) {
            buf[i] = (uint8_t)(buf[i] * 7u + 3u);
        }
        if (put(buf, (size_t)n) != 0) {
            return -1;
        }
        left -= (uint32_t)n;
    }
    return 0;
}

static int cmd_spin(void)
{
    uint32_t n;
    uint32_t t0;
    uint32_t dt;
    uint8_t out[4];
    if (get_u32(&n) != 0 || n == 0) {
        return -1;
    }
    t0 = lrt_platform_cycles();
    lrt_test_spin(n);
    dt = lrt_platform_cycles() - t0;
    out[0] = (uint8_t)dt;
    out[1] = (uint8_t)(dt >> 8);
    out[2] = (uint8_t)(dt >> 16);
    out[3] = (uint8_t)(dt >> 24);
    return put(out, 4);
}

int main(void)
{
    static const char ready[] = LRT_PLATFORM_READY "\n";
    static const char name[] = LRT_BOARD_NAME "\n";
    uint8_t cmd;
    if (lrt_platform_init() != LRT_OK || put(ready, sizeof ready - 1) != 0) {
        return 1;
    }
    for (;;) {
        long n = lrt_platform_read(&cmd, 1);
        int rc = 0;
        if (n == 0) {
            break;
        }
        if (n < 0) {
            return 2;
        }
        switch (cmd) {
        case 'E': rc = cmd_echo(); break;
        case 'S': rc = cmd_spin(); break;
        case 'I': rc = put(name, sizeof name - 1); break;
        case 'X':
            if (lrt_platform_read_full(&cmd, 1) != 1) {
                return 3;
            }
            lrt_platform_exit(cmd);
            break;
        default:
            /* lrt_err_str links the library into the test image. */
            rc = put(lrt_err_str(LRT_ERR_TYPE), 20);
            break;
        }
        if (rc != 0) {
            return 4;
        }
    }
    lrt_platform_exit(0);
    return 0;
}
