/* proto_dummy_platform.c - the dummy request server (proto_dummy.h) on the real BSP
 * (lrt_platform.h): host executable, QEMU semihosting or UART. Prints LRT_PLATFORM_READY
 * first, as a firmware may, then serves until BYE or end of input (exit status 0). */
#include "lrt_platform.h"
#include "proto_dummy.h"

static int plat_read(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    return (int)lrt_platform_read(buf, len);
}

static int plat_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    return (int)lrt_platform_write(buf, len);
}

int main(void)
{
    static const char ready[] = LRT_PLATFORM_READY "\n";
    static lrt_app app;
    static dummy_state st;
    lrt_app_handlers h;
    lrt_app_config cfg;
    lrt_app_io io;
    int rc;

    if (lrt_platform_init() != LRT_OK ||
        lrt_platform_write((const uint8_t *)ready, sizeof ready - 1) != (long)(sizeof ready - 1))
        return 1;
    dummy_setup(&st, &h, &cfg);
    io.read = plat_read;
    io.write = plat_write;
    io.ctx = NULL;
    if (lrt_app_init(&app, &cfg, &io, &h) != LRT_OK)
        return 2;
    rc = lrt_app_serve(&app);
    lrt_platform_exit(rc == LRT_APP_BYE || rc == LRT_ERR_EOF ? 0 : 3);
    return 0;
}
