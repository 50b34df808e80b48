/* Host driver for tests/c/test_kernels.py: reads kernel cases from stdin, writes results.
 *
 * Records are little-endian int32 fields followed by int8 payloads (see test_kernels.py).
 * Test code, so it may allocate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_kernels.h"

static int read_i32(int32_t *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, stdin) != 4) {
        return 0;
    }
    *v = (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                   ((uint32_t)b[3] << 24));
    return 1;
}

static int32_t need_i32(void)
{
    int32_t v;
    if (!read_i32(&v)) {
        fprintf(stderr, "truncated input\n");
        exit(3);
    }
    return v;
}

static void write_i32(int32_t v)
{
    const uint32_t u = (uint32_t)v;
    const unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                                (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
    fwrite(b, 1, 4, stdout);
}

static void *need_bytes(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL || fread(p, 1, n, stdin) != n) {
        fprintf(stderr, "truncated payload\n");
        exit(3);
    }
    return p;
}

static void read_requant(lrt_requant *q, int32_t n, int32_t **mult, int8_t **shift,
                         int32_t **bias, int32_t has_bias)
{
    int32_t i;
    *mult = malloc(sizeof(int32_t) * (size_t)n);
    *shift = malloc((size_t)n);
    *bias = has_bias ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
    if (*mult == NULL || *shift == NULL || (has_bias && *bias == NULL)) {
        exit(4);
    }
    for (i = 0; i < n; i++) {
        (*mult)[i] = need_i32();
    }
    for (i = 0; i < n; i++) {
        (*shift)[i] = (int8_t)need_i32();
    }
    for (i = 0; has_bias && i < n; i++) {
        (*bias)[i] = need_i32();
    }
    q->multiplier = *mult;
    q->shift = *shift;
}

static void run_conv(void)
{
    int32_t h[16], has_bias, i;
    lrt_dims in, out;
    lrt_window win;
    lrt_requant q;
    int32_t *mult, *bias;
    int8_t *shift, *input, *weights, *output;
    size_t n_out;
    for (i = 0; i < 16; i++) {
        h[i] = need_i32();
    }
    has_bias = need_i32();
    in.h = (uint16_t)h[0], in.w = (uint16_t)h[1], in.c = (uint16_t)h[2];
    out.h = (uint16_t)h[3], out.w = (uint16_t)h[4], out.c = (uint16_t)h[5];
    win.kernel_h = (uint8_t)h[6], win.kernel_w = (uint8_t)h[7];
    win.stride_h = (uint8_t)h[8], win.stride_w = (uint8_t)h[9];
    win.pad_top = (uint8_t)h[10], win.pad_left = (uint8_t)h[11];
    q.input_offset = h[12], q.output_offset = h[13], q.act_min = h[14], q.act_max = h[15];
    read_requant(&q, out.c, &mult, &shift, &bias, has_bias);
    input = need_bytes((size_t)in.h * in.w * in.c);
    weights = need_bytes((size_t)out.c * win.kernel_h * win.kernel_w * in.c);
    n_out = (size_t)out.h * out.w * out.c;
    output = malloc(n_out ? n_out : 1);
    if (output == NULL) {
        exit(4);
    }
    write_i32(lrt_conv2d_s8(&in, &out, &win, &q, input, weights, bias, output));
    fwrite(output, 1, n_out, stdout);
    free(mult), free(shift), free(bias), free(input), free(weights), free(output);
}

static void run_dense(void)
{
    int32_t n_in = need_i32(), n_out = need_i32();
    lrt_requant q;
    int32_t *mult, *bias, has_bias;
    int8_t *shift, *input, *weights, *output;
    q.input_offset = need_i32();
    q.output_offset = need_i32();
    q.act_min = need_i32();
    q.act_max = need_i32();
    has_bias = need_i32();
    read_requant(&q, n_out, &mult, &shift, &bias, has_bias);
    input = need_bytes((size_t)n_in);
    weights = need_bytes((size_t)n_in * (size_t)n_out);
    output = malloc((size_t)n_out);
    if (output == NULL) {
        exit(4);
    }
    write_i32(lrt_dense_s8((uint32_t)n_in, (uint16_t)n_out, &q, input, weights, bias, output));
    fwrite(output, 1, (size_t)n_out, stdout);
    free(mult), free(shift), free(bias), free(input), free(weights), free(output);
}

static void run_pool(void)
{
    int32_t h[13], i;
    lrt_dims in, out;
    lrt_window win;
    int8_t *input, *output;
    size_t n_out;
    for (i = 0; i < 13; i++) {
        h[i] = need_i32();
    }
    in.h = (uint16_t)h[0], in.w = (uint16_t)h[1], in.c = (uint16_t)h[2];
    out.h = (uint16_t)h[3], out.w = (uint16_t)h[4], out.c = (uint16_t)h[2];
    win.kernel_h = (uint8_t)h[5], win.kernel_w = (uint8_t)h[6];
    win.stride_h = (uint8_t)h[7], win.stride_w = (uint8_t)h[8];
    win.pad_top = (uint8_t)h[9], win.pad_left = (uint8_t)h[10];
    input = need_bytes((size_t)in.h * in.w * in.c);
    n_out = (size_t)out.h * out.w * out.c;
    output = malloc(n_out ? n_out : 1);
    if (output == NULL) {
        exit(4);
    }
    write_i32(lrt_maxpool2d_s8(&in, &out, &win, (int8_t)h[11], (int8_t)h[12], input, output));
    fwrite(output, 1, n_out, stdout);
    free(input), free(output);
}

static void run_scalar(void)
{
    const int32_t fn = need_i32(), n = need_i32();
    int32_t i;
    for (i = 0; i < n; i++) {
        const int32_t a = need_i32(), b = need_i32(), c = need_i32();
        int32_t r = 0;
        switch (fn) {
        case 0: r = lrt_sat_round_doubling_high_mul(a, b); break;
        case 1: r = lrt_rounding_divide_by_pot(a, (int)b); break;
        case 2: r = lrt_requantize(a, b, (int)c); break;
        case 3: r = lrt_requantize_away(a, b, (int)c); break;
        default: exit(5);
        }
        write_i32(r);
    }
}

/* Invalid arguments must be refused, not crash (ASan watches). */
static void run_errors(void)
{
    static const int8_t data[64] = {0};
    static int8_t outbuf[64];
    static const int32_t mult[2] = {1 << 30, 1 << 30};
    static const int8_t shift[2] = {0, 0};
    static const int8_t bad_shift[2] = {0, 31};
    static const int32_t bad_mult[2] = {1 << 30, -1};
    const lrt_dims d = {2, 2, 2};
    const lrt_dims d1 = {1, 1, 2};
    const lrt_dims dc = {1, 1, 3};
    const lrt_window w = {2, 2, 1, 1, 0, 0};
    const lrt_window w_stride0 = {2, 2, 0, 1, 0, 0};
    const lrt_window w_kernel0 = {0, 2, 1, 1, 0, 0};
    lrt_requant q = {0, 0, -128, 127, mult, shift};
    lrt_requant q_shift = {0, 0, -128, 127, mult, bad_shift};
    lrt_requant q_mult = {0, 0, -128, 127, bad_mult, shift};
    lrt_requant q_act = {0, 0, 5, 4, mult, shift};
    lrt_requant q_null = {0, 0, -128, 127, NULL, shift};
    write_i32(lrt_conv2d_s8(&d, &d1, &w, &q, data, data, NULL, outbuf)); /* valid: 0 */
    write_i32(lrt_conv2d_s8(NULL, &d1, &w, &q, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w_stride0, &q, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w_kernel0, &q, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w, &q_shift, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w, &q_mult, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w, &q_null, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w, NULL, data, data, NULL, outbuf));
    write_i32(lrt_conv2d_s8(&d, &d1, &w, &q, NULL, data, NULL, outbuf));
    write_i32(lrt_dense_s8(8, 2, &q, data, data, NULL, outbuf)); /* valid: 0 */
    write_i32(lrt_dense_s8(8, 2, &q_act, data, data, NULL, outbuf));
    write_i32(lrt_dense_s8(0, 2, &q, data, data, NULL, outbuf));
    write_i32(lrt_dense_s8(8, 2, &q, data, NULL, NULL, outbuf));
    write_i32(lrt_maxpool2d_s8(&d, &d1, &w, -128, 127, data, outbuf)); /* valid: 0 */
    write_i32(lrt_maxpool2d_s8(&d, &dc, &w, -128, 127, data, outbuf));
    write_i32(lrt_maxpool2d_s8(&d, &d1, &w, 3, 2, data, outbuf));
    write_i32(lrt_maxpool2d_s8(&d, &d1, &w_stride0, -128, 127, data, outbuf));
    write_i32(lrt_maxpool2d_s8(&d, &d1, &w, -128, 127, data, NULL));
}

int main(void)
{
    int32_t op;
    while (read_i32(&op)) {
        switch (op) {
        case 1: run_conv(); break;
        case 2: run_dense(); break;
        case 3: run_pool(); break;
        case 4: run_scalar(); break;
        case 5: run_errors(); break;
        default: fprintf(stderr, "bad op %ld\n", (long)op); return 2;
        }
    }
    return 0;
}
