/* Bare-metal test (QEMU, cores with the DSP extension): the SIMD kernels against the
 * portable ones on random shapes and random data, byte for byte. Prints one line per
 * mismatch and a summary "simd <0|1> cases <n> mismatches <m>", exits with 1 on any
 * mismatch. Built by tests/c/test_kernels_simd_qemu.py with the board's BSP.
 * Argument ranges cover what the SIMD path treats specially: filter sizes of every residue
 * mod 4, odd pixel and channel counts, padding (im2col from the zero point), strides,
 * extreme offsets, biases that wrap, left shifts. */
#include <stdio.h>
#include <string.h>

#include "lrt_kernels.h"
#include "lrt_platform.h"

#define MAX_IN (12 * 12 * 20)
#define MAX_W (9 * 5 * 5 * 20)
#define MAX_OUT (12 * 12 * 9)
#define MAX_DENSE_IN 300
#define MAX_DENSE_OUT 9
#define CASES 400

static int8_t input[MAX_IN], weights[MAX_W], out_ref[MAX_OUT], out_simd[MAX_OUT];
static int32_t bias[16], mult[16];
static int8_t shift[16];
static uint32_t kbuf[(4 * 5 * 5 * 20 + 2 * 5 * 5 * 20 + 8) / 4];
static uint32_t rng = 0x2545F491u;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static int32_t between(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(next() % (uint32_t)(hi - lo + 1));
}

static void say(const char *s)
{
    lrt_platform_write((const uint8_t *)s, strlen(s));
}

static void fill(int8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        p[i] = (int8_t)between(-128, 127);
    }
}

static void random_requant(lrt_requant *q, uint16_t n)
{
    uint16_t i;
    const int32_t kind = between(0, 3);
    for (i = 0; i < n; i++) {
        if (kind == 0) { /* power-of-two models */
            mult[i] = (int32_t)1 << 30;
            shift[i] = (int8_t)between(-14, -3);
        } else if (kind == 1) { /* scales > 1: left shifts */
            mult[i] = between(1 << 30, 0x7FFFFFFF);
            shift[i] = (int8_t)between(0, 8);
        } else {
            mult[i] = between(1 << 30, 0x7FFFFFFF);
            shift[i] = (int8_t)between(-16, -4);
        }
        bias[i] = between(0, 9) == 0 ? (int32_t)(next() | 0x7FFF0000u) : between(-40000, 40000);
    }
    q->input_offset = between(0, 4) == 0 ? (between(0, 1) ? -127 : 128) : between(-127, 128);
    q->output_offset = between(-128, 127);
    q->act_min = between(-128, 0);
    q->act_max = between(q->act_min, 127);
    q->multiplier = mult;
    q->shift = shift;
}

static int compare(const char *what, uint32_t n, int rc_ref, int rc_simd, uint32_t id)
{
    char line[96];
    if (rc_ref == rc_simd && memcmp(out_ref, out_simd, n) == 0) {
        return 0;
    }
    snprintf(line, sizeof line, "mismatch %s case %lu rc %d/%d\n", what, (unsigned long)id,
             rc_ref, rc_simd);
    say(line);
    return 1;
}

static int conv_case(uint32_t id)
{
    lrt_dims in, out;
    lrt_window win;
    lrt_requant q;
    const int32_t *b;
    uint32_t k, n_out, need;
    int rc_ref, rc_simd;
    in.h = (uint16_t)between(1, 12);
    in.w = (uint16_t)between(1, 12);
    in.c = (uint16_t)between(1, 20);
    win.kernel_h = (uint8_t)between(1, 5);
    win.kernel_w = (uint8_t)between(1, 5);
    win.stride_h = (uint8_t)between(1, 3);
    win.stride_w = (uint8_t)between(1, 3);
    win.pad_top = (uint8_t)between(0, win.kernel_h - 1);
    win.pad_left = (uint8_t)between(0, win.kernel_w - 1);
    out.h = (uint16_t)LRT_MAX(1, (in.h + 2 * win.pad_top - win.kernel_h) / win.stride_h + 1);
    out.w = (uint16_t)LRT_MAX(1, (in.w + 2 * win.pad_left - win.kernel_w) / win.stride_w + 1);
    out.c = (uint16_t)between(1, 9);
    k = (uint32_t)win.kernel_h * win.kernel_w * in.c;
    n_out = (uint32_t)out.h * out.w * out.c;
    fill(input, (uint32_t)in.h * in.w * in.c);
    fill(weights, k * out.c);
    random_requant(&q, out.c);
    need = lrt_conv2d_s8_get_buffer_size(&in, &win);
    if (need > sizeof kbuf) {
        say("buffer too small for a case\n");
        return 1;
    }
    memset(out_ref, 0x55, n_out);
    memset(out_simd, 0x55, n_out);
    b = between(0, 5) ? bias : NULL;
    rc_ref = lrt_conv2d_s8(&in, &out, &win, &q, input, weights, b, out_ref);
    rc_simd = lrt_conv2d_s8_buf(&in, &out, &win, &q, input, weights, b, out_simd, kbuf, need);
    return compare("conv", n_out, rc_ref, rc_simd, id);
}

static int dense_case(uint32_t id)
{
    lrt_requant q;
    const uint32_t n_in = (uint32_t)between(1, MAX_DENSE_IN);
    const uint16_t n_out = (uint16_t)between(1, MAX_DENSE_OUT);
    const int32_t *b = between(0, 5) ? bias : NULL;
    int rc_ref, rc_simd;
    fill(input, n_in);
    fill(weights, n_in * n_out);
    random_requant(&q, n_out);
    rc_ref = lrt_dense_s8_portable(n_in, n_out, &q, input, weights, b, out_ref);
    rc_simd = lrt_dense_s8(n_in, n_out, &q, input, weights, b, out_simd);
    return compare("dense", n_out, rc_ref, rc_simd, id);
}

int main(void)
{
    char line[96];
    uint32_t i, bad = 0;
    lrt_platform_init();
    for (i = 0; i < CASES; i++) {
        bad += (uint32_t)conv_case(i);
        bad += (uint32_t)dense_case(i);
    }
    snprintf(line, sizeof line, "simd %d cases %d mismatches %lu\n", lrt_kernels_simd(),
             2 * CASES, (unsigned long)bad);
    say(line);
    lrt_platform_exit(bad ? 1 : 0);
    return 0;
}
