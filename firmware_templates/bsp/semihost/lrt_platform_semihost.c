/* lrt_platform_semihost.c - platform I/O over ARM semihosting (newlib rdimon).
 *
 * QEMU with `-semihosting-config enable=on,target=native` serves SYS_READ/SYS_WRITE on
 * the ":tt" handles from its own stdin/stdout: binary-safe, with end of file, ~1 MB in
 * 60 ms. We call read()/write() directly (no stdio buffering, no heap use).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "lrt_common.h"
#include "lrt_platform.h"

void lrt_cycles_start(void);

int lrt_platform_init(void)
{
    lrt_cycles_start();
    return LRT_OK;
}

long lrt_platform_read(uint8_t *buf, size_t len)
{
    if (len == 0) {
        return 0;
    }
    for (;;) {
        long n = (long)read(0, buf, len);
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            return LRT_ERR_IO;
        }
    }
}

long lrt_platform_write(const uint8_t *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        long n = (long)write(1, buf + done, len - done);
        if (n <= 0) {
            return LRT_ERR_IO;
        }
        done += (size_t)n;
    }
    return (long)len;
}

void lrt_platform_exit(int code)
{
    exit(code);
}
