/* proto_dummy_fw.c - a stand-in firmware for the Python client tests: lrt_app_serve over
 * stdin/stdout with the dummy handlers of proto_dummy.h. Exit status: 0 after BYE or end of
 * input, 1 on a transport error. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <unistd.h>

#include "proto_dummy.h"

static int fd_read(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    for (;;) {
        ssize_t n = read(0, buf, len);
        if (n >= 0)
            return (int)n;
        if (errno != EINTR)
            return LRT_ERR_IO;
    }
}

static int fd_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    for (;;) {
        ssize_t n = write(1, buf, len);
        if (n > 0)
            return (int)n;
        if (n < 0 && errno != EINTR)
            return LRT_ERR_IO;
    }
}

int main(void)
{
    static lrt_app app;
    static dummy_state st;
    lrt_app_handlers h;
    lrt_app_config cfg;
    lrt_app_io io;
    int rc;

    dummy_setup(&st, &h, &cfg);
    io.read = fd_read;
    io.write = fd_write;
    io.ctx = NULL;
    if (lrt_app_init(&app, &cfg, &io, &h) != LRT_OK)
        return 2;
    rc = lrt_app_serve(&app);
    return rc == LRT_APP_BYE || rc == LRT_ERR_EOF ? 0 : 1;
}
