/* lrt_platform_host.c - the "host emulator": the firmware as a native process.
 *
 * Raw read(2)/write(2) on fd 0/1: binary (no text-mode translation), unbuffered (a reply
 * must reach the host before the next request is read, or both sides wait forever).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "lrt_common.h"
#include "lrt_platform.h"

int lrt_platform_init(void)
{
    return LRT_OK;
}

long lrt_platform_read(uint8_t *buf, size_t len)
{
    if (len == 0) {
        return 0;
    }
    for (;;) {
        ssize_t n = read(0, buf, len);
        if (n >= 0) {
            return (long)n;
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
        ssize_t n = write(1, buf + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return LRT_ERR_IO;
        }
        done += (size_t)n;
    }
    return (long)len;
}

uint32_t lrt_platform_cycles(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return 0;
    }
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

void lrt_platform_exit(int code)
{
    exit(code);
}
