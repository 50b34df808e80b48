/* lrt_kernels.c - int8 forward kernels (see lrt_kernels.h for the arithmetic). */
#include "lrt_kernels.h"

#include <string.h>

#if LRT_HAVE_SIMD
#include <arm_acle.h>
#endif

/* Signed right shifts of negative values and out-of-range signed conversions are
 * implementation-defined in C99; the helpers below only shift non-negative values and only
 * convert back from unsigned on two's-complement targets (all gcc/clang targets), so host
 * and Cortex-M give the same bits. */

/* floor(x / 2^e) without shifting a negative value: ~x >= 0 when x < 0. */
static int32_t floor_shift(int32_t x, int e)
{
    return x >= 0 ? (x >> e) : ~((~x) >> e);
}

static int32_t wrap_add(int32_t a, int32_t b)
{
    /* TFLite adds the bias in int32; wrap instead of undefined overflow. */
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t sat_round_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t s;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    s = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
    /* C++ '/' truncates toward zero: do that with shifts of |s| (no 64-bit division on M4). */
    return (int32_t)(s >= 0 ? (s >> 31) : -((-s) >> 31));
}

static inline int32_t rounding_divide_by_pot(int32_t x, int exponent)
{
    const uint32_t mask = (uint32_t)(((uint64_t)1 << exponent) - 1u);
    const uint32_t remainder = (uint32_t)x & mask;
    const uint32_t threshold = (mask >> 1) + (x < 0 ? 1u : 0u);
    return floor_shift(x, exponent) + (remainder > threshold ? 1 : 0);
}

/* The kernels inline this; lrt_requantize is the same function for callers and tests. */
static inline int32_t requantize(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    /* TFLite computes x * (1 << left) in int32; a wrapped product gives the same bits. */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    /* A power-of-two scale (every model lrt trains) has multiplier 2^30, and then the
     * doubling high multiply is a halving rounded half up, ceil(shifted / 2): the same bits
     * without the 64-bit product. */
    if (multiplier == ((int32_t)1 << 30)) {
        return rounding_divide_by_pot(floor_shift(shifted, 1) + (int32_t)((uint32_t)shifted & 1u),
                                      right);
    }
    return rounding_divide_by_pot(sat_round_doubling_high_mul(shifted, multiplier), right);
}

int32_t lrt_sat_round_doubling_high_mul(int32_t a, int32_t b)
{
    return sat_round_doubling_high_mul(a, b);
}

int32_t lrt_rounding_divide_by_pot(int32_t x, int exponent)
{
    return rounding_divide_by_pot(x, exponent);
}

int32_t lrt_requantize(int32_t x, int32_t multiplier, int shift)
{
    return requantize(x, multiplier, shift);
}

int32_t lrt_requantize_away(int32_t x, int32_t multiplier, int shift)
{
    const int total = 31 - shift; /* 1..62 */
    const uint64_t mag = x < 0 ? (uint64_t)(-(int64_t)x) : (uint64_t)x;
    const uint64_t r =
        (mag * (uint64_t)(uint32_t)multiplier + ((uint64_t)1 << (total - 1))) >> total;
    if (x < 0) {
        return r >= ((uint64_t)1 << 31) ? INT32_MIN : -(int32_t)r;
    }
    return r > (uint64_t)INT32_MAX ? INT32_MAX : (int32_t)r;
}

static int requant_valid(const lrt_requant *q, uint16_t n_out)
{
    uint16_t i;
    if (q == NULL || q->multiplier == NULL || q->shift == NULL) {
        return 0;
    }
    /* |input_offset| <= 255 keeps x + input_offset in 16 bits (int8 models: [-127, 128]) */
    if (q->act_min < -128 || q->act_max > 127 || q->act_min > q->act_max ||
        q->input_offset < -255 || q->input_offset > 255) {
        return 0;
    }
    for (i = 0; i < n_out; i++) {
        if (q->multiplier[i] < 0 || q->shift[i] < -31 || q->shift[i] > 30) {
            return 0;
        }
    }
    return 1;
}

static int8_t output_stage(int32_t scaled, const lrt_requant *q)
{
    /* int64: scaled may be near INT32_MAX when the clamp is what bounds the result. */
    int64_t v = (int64_t)scaled + q->output_offset;
    v = LRT_CLAMP(v, (int64_t)q->act_min, (int64_t)q->act_max);
    return (int8_t)v;
}

static int window_valid(const lrt_dims *in, const lrt_dims *out, const lrt_window *win)
{
    return in != NULL && out != NULL && win != NULL && win->kernel_h > 0 && win->kernel_w > 0 &&
           win->stride_h > 0 && win->stride_w > 0 && in->c > 0;
}

int lrt_kernels_simd(void)
{
    return LRT_HAVE_SIMD;
}

static int conv_args_valid(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                           const lrt_requant *q, const int8_t *input, const int8_t *weights,
                           int8_t *output)
{
    return window_valid(in, out, win) && input != NULL && weights != NULL && output != NULL &&
           requant_valid(q, out->c);
}

/* sum of (x[j] + off) * w[j]: a plain loop of 16 x 16 -> 32-bit multiply-adds (x + off fits
 * 16 bits), the form a host compiler turns into its vector dot-product instruction
 * (build.py's host flags let gcc vectorize it at -O2) */
static int32_t dot_offset(const int8_t *x, const int8_t *w, uint32_t n, int32_t off)
{
    int32_t acc = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        const int16_t xo = (int16_t)(x[j] + off);
        acc += xo * (int16_t)w[j];
    }
    return acc;
}

#if !defined(__arm__)
/* Host builds (the emulator) only, where a few KB of stack cost nothing: the patches of two
 * neighbouring output pixels as int16 x + input_offset (0 at padding taps) on the stack, then
 * one dot product of the whole filter length per output channel and pixel, which the host
 * compiler vectorizes (the kernel rows alone are runs of kw * in_c, 3 taps on a first layer).
 * The same integer sums as the loop below; the MCU builds keep the loop and their stack. */
#define CONV_HOST_PATCH 1152u

/* four filters (rows of n weights, one after the other) against one patch: each load of the
 * patch serves four products */
static void dot16x4(const int16_t *x, const int8_t *w, uint32_t n, int32_t *acc)
{
    const int8_t *w1 = w + n, *w2 = w1 + n, *w3 = w2 + n;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        const int32_t xj = x[j];
        a0 += xj * (int16_t)w[j];
        a1 += xj * (int16_t)w1[j];
        a2 += xj * (int16_t)w2[j];
        a3 += xj * (int16_t)w3[j];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* two patches against four filters: each load of a filter row serves two products */
static void dot16x4x2(const int16_t *x, const int16_t *y, const int8_t *w, uint32_t n, int32_t *acc,
                      int32_t *acc2)
{
    const int8_t *w1 = w + n, *w2 = w1 + n, *w3 = w2 + n;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        const int32_t xj = x[j], yj = y[j];
        const int32_t v0 = w[j], v1 = w1[j], v2 = w2[j], v3 = w3[j];
        a0 += xj * v0;
        a1 += xj * v1;
        a2 += xj * v2;
        a3 += xj * v3;
        b0 += yj * v0;
        b1 += yj * v1;
        b2 += yj * v2;
        b3 += yj * v3;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    acc2[0] = b0;
    acc2[1] = b1;
    acc2[2] = b2;
    acc2[3] = b3;
}

static int32_t dot16(const int16_t *x, const int8_t *w, uint32_t n)
{
    int32_t acc = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        acc += x[j] * (int16_t)w[j];
    }
    return acc;
}

/* Small layers (filter taps x output channels up to CONV_HOST_BY_CHANNEL, channels a multiple
 * of 8) take their weights transposed to [tap][channel] int16 once per call, and every tap of
 * a pixel adds to eight channels' sums at once: a vector multiply-add per tap instead of one
 * short dot product per channel (a first layer has 9 taps). The taps are read straight from
 * the input rows (a window cut by padding from an int8 patch filled with the zero point,
 * whose x + input_offset is 0). */
#define CONV_HOST_BY_CHANNEL 8192u

/* requantize nc sums (channels oc..) of one output pixel into dst */
static void host_outputs(const lrt_requant *q, const int32_t *bias, uint16_t oc, unsigned nc,
                         const int32_t *acc, int8_t *dst)
{
    unsigned t;
    for (t = 0; t < nc; t++) {
        const int32_t a = bias != NULL ? wrap_add(acc[t], bias[oc + t]) : acc[t];
        dst[oc + t] = output_stage(requantize(a, q->multiplier[oc + t], q->shift[oc + t]), q);
    }
}

/* the sums of eight channels (wt: their column of the transposed weights) over one window:
 * kh rows of krow taps, row_stride apart */
static void sums_by_channel(const int8_t *x, uint32_t row_stride, uint16_t kh, uint32_t krow,
                            int32_t off, const int16_t *wt, uint16_t channels, int32_t acc[8])
{
    const int16_t *wk = wt;
    uint16_t ky;
    unsigned t;
    for (t = 0; t < 8u; t++)
        acc[t] = 0;
    for (ky = 0; ky < kh; ky++) {
        const int8_t *row = x + (uint32_t)ky * row_stride;
        uint32_t k;
        for (k = 0; k + 2 <= krow; k += 2, wk += 2u * channels) { /* fewer loop steps */
            const int32_t x0 = row[k] + off, x1 = row[k + 1] + off;
            for (t = 0; t < 8u; t++)
                acc[t] += x0 * wk[t] + x1 * wk[channels + t];
        }
        if (k < krow) {
            const int32_t xk = row[k] + off;
            for (t = 0; t < 8u; t++)
                acc[t] += xk * wk[t];
            wk += channels;
        }
    }
}

static void conv2d_host_by_channel(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                                   const lrt_requant *q, const int8_t *input, const int8_t *weights,
                                   const int32_t *bias, int8_t *output)
{
    const uint32_t krow = (uint32_t)win->kernel_w * in->c, taps = win->kernel_h * krow;
    const uint32_t in_row = (uint32_t)in->w * in->c;
    int16_t wt[CONV_HOST_BY_CHANNEL];
    int8_t patch[CONV_HOST_BY_CHANNEL / 8u]; /* taps <= CONV_HOST_BY_CHANNEL / out_c */
    uint16_t oy, ox, oc;
    uint32_t k;
    for (oc = 0; oc < out->c; oc++)
        for (k = 0; k < taps; k++)
            wt[k * out->c + oc] = weights[(uint32_t)oc * taps + k];
    for (oy = 0; oy < out->h; oy++) {
        const int32_t iy0 = (int32_t)oy * win->stride_h - win->pad_top;
        for (ox = 0; ox < out->w; ox++) {
            const int32_t ix0 = (int32_t)ox * win->stride_w - win->pad_left;
            int8_t *dst = output + ((uint32_t)oy * out->w + ox) * out->c;
            const int8_t *x = patch;
            uint32_t row_stride = krow;
            if (iy0 >= 0 && ix0 >= 0 && iy0 + win->kernel_h <= in->h &&
                ix0 + win->kernel_w <= in->w) {
                x = input + (uint32_t)iy0 * in_row + (uint32_t)ix0 * in->c;
                row_stride = in_row;
            } else {
                const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t kx1 = LRT_MIN((int32_t)win->kernel_w, (int32_t)in->w - ix0);
                int32_t ky;
                memset(patch, -q->input_offset, taps);
                for (ky = 0; ky < (int32_t)win->kernel_h && kx1 > kx0; ky++) {
                    const int32_t iy = iy0 + ky;
                    if (iy >= 0 && iy < (int32_t)in->h)
                        memcpy(patch + (uint32_t)ky * krow + (uint32_t)kx0 * in->c,
                               input + (uint32_t)iy * in_row + (uint32_t)(ix0 + kx0) * in->c,
                               (uint32_t)(kx1 - kx0) * in->c);
                }
            }
            for (oc = 0; oc < out->c; oc = (uint16_t)(oc + 8u)) {
                int32_t acc[8];
                sums_by_channel(x, row_stride, win->kernel_h, krow, q->input_offset, wt + oc,
                                out->c, acc);
                host_outputs(q, bias, oc, 8u, acc, dst);
            }
        }
    }
}

/* the int16 patch (x + input_offset, zeros where padding cuts the window) of output pixel
 * (oy, ox) */
static void host_patch(const lrt_dims *in, const lrt_window *win, const lrt_requant *q,
                       const int8_t *input, uint16_t oy, uint16_t ox, int16_t *patch)
{
    const uint32_t krow = (uint32_t)win->kernel_w * in->c;
    const int32_t iy0 = (int32_t)oy * win->stride_h - win->pad_top;
    const int32_t ix0 = (int32_t)ox * win->stride_w - win->pad_left;
    const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
    const int32_t kx1 = LRT_MIN((int32_t)win->kernel_w, (int32_t)in->w - ix0);
    int32_t ky;
    memset(patch, 0, sizeof(int16_t) * win->kernel_h * krow);
    for (ky = 0; ky < (int32_t)win->kernel_h && kx1 > kx0; ky++) {
        const int32_t iy = iy0 + ky;
        const int8_t *px;
        int16_t *pd;
        uint32_t j, run;
        if (iy < 0 || iy >= (int32_t)in->h)
            continue;
        px = input + ((uint32_t)iy * in->w + (uint32_t)(ix0 + kx0)) * in->c;
        pd = patch + (uint32_t)ky * krow + (uint32_t)kx0 * in->c;
        run = (uint32_t)(kx1 - kx0) * in->c;
        for (j = 0; j < run; j++)
            pd[j] = (int16_t)(px[j] + q->input_offset);
    }
}

/* two output pixels of a row at a time: each filter row loaded serves both patches */
static void conv2d_host_patch(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                              const lrt_requant *q, const int8_t *input, const int8_t *weights,
                              const int32_t *bias, int8_t *output)
{
    const uint32_t filter_size = (uint32_t)win->kernel_h * win->kernel_w * in->c;
    int16_t patch[2][CONV_HOST_PATCH];
    uint32_t ox, oc; /* 32-bit: a step of 2 or 4 must not wrap at 65535 */
    uint16_t oy;
    for (oy = 0; oy < out->h; oy++) {
        for (ox = 0; ox < out->w; ox += 2u) {
            const unsigned pixels = ox + 1u < out->w ? 2u : 1u;
            int8_t *dst = output + ((uint32_t)oy * out->w + ox) * out->c;
            unsigned p;
            for (p = 0; p < pixels; p++)
                host_patch(in, win, q, input, oy, (uint16_t)(ox + p), patch[p]);
            for (oc = 0; oc < out->c; oc += 4u) {
                const int8_t *f = weights + oc * filter_size;
                const unsigned nc = LRT_MIN((unsigned)out->c - oc, 4u);
                int32_t acc[2][4];
                unsigned t;
                if (nc == 4u && pixels == 2u) {
                    dot16x4x2(patch[0], patch[1], f, filter_size, acc[0], acc[1]);
                } else if (nc == 4u) {
                    dot16x4(patch[0], f, filter_size, acc[0]);
                } else {
                    for (p = 0; p < pixels; p++)
                        for (t = 0; t < nc; t++)
                            acc[p][t] = dot16(patch[p], f + t * filter_size, filter_size);
                }
                for (p = 0; p < pixels; p++)
                    host_outputs(q, bias, (uint16_t)oc, nc, acc[p], dst + p * out->c);
            }
        }
    }
}
#endif

int lrt_conv2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                  const lrt_requant *q, const int8_t *input, const int8_t *weights,
                  const int32_t *bias, int8_t *output)
{
    uint32_t filter_size;
    uint16_t oy, ox, oc;
    if (!conv_args_valid(in, out, win, q, input, weights, output)) {
        return LRT_ERR_ARG;
    }
    filter_size = (uint32_t)win->kernel_h * win->kernel_w * in->c;
#if !defined(__arm__)
    /* the zero-point patch needs the zero point in int8: input_offset in [-127, 128] */
    if (out->c % 8u == 0 && filter_size * out->c <= CONV_HOST_BY_CHANNEL &&
        q->input_offset >= -127 && q->input_offset <= 128) {
        conv2d_host_by_channel(in, out, win, q, input, weights, bias, output);
        return LRT_OK;
    }
    if (filter_size <= CONV_HOST_PATCH) {
        conv2d_host_patch(in, out, win, q, input, weights, bias, output);
        return LRT_OK;
    }
#endif
    for (oy = 0; oy < out->h; oy++) {
        const int32_t iy0 = (int32_t)oy * win->stride_h - win->pad_top;
        const int32_t ky0 = iy0 < 0 ? -iy0 : 0;
        const int32_t ky1 = LRT_MIN((int32_t)win->kernel_h, (int32_t)in->h - iy0);
        for (ox = 0; ox < out->w; ox++) {
            const int32_t ix0 = (int32_t)ox * win->stride_w - win->pad_left;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t kx1 = LRT_MIN((int32_t)win->kernel_w, (int32_t)in->w - ix0);
            int8_t *dst = output + ((uint32_t)oy * out->w + ox) * out->c;
            /* the taps of one kernel row inside the input are contiguous in the input (NHWC)
             * and in the filter (OHWI): one run of (kx1 - kx0) * in_c products per row */
            const uint32_t run = kx1 > kx0 ? (uint32_t)(kx1 - kx0) * in->c : 0u;
            const int32_t off = q->input_offset;
            for (oc = 0; oc < out->c; oc++) {
                const int8_t *f = weights + (uint32_t)oc * filter_size;
                int32_t acc = 0;
                int32_t ky;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *px =
                        input + ((uint32_t)(iy0 + ky) * in->w + (uint32_t)(ix0 + kx0)) * in->c;
                    const int8_t *wk = f + ((uint32_t)ky * win->kernel_w + (uint32_t)kx0) * in->c;
                    acc += dot_offset(px, wk, run, off);
                }
                if (bias != NULL) {
                    acc = wrap_add(acc, bias[oc]);
                }
                dst[oc] = output_stage(requantize(acc, q->multiplier[oc], q->shift[oc]), q);
            }
        }
    }
    return LRT_OK;
}

int lrt_dense_s8_portable(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
                          const int8_t *weights, const int32_t *bias, int8_t *output)
{
    uint16_t o;
    if (input == NULL || weights == NULL || output == NULL || n_in == 0 ||
        !requant_valid(q, n_out)) {
        return LRT_ERR_ARG;
    }
    for (o = 0; o < n_out; o++) {
        const int8_t *row = weights + (uint32_t)o * n_in;
        int32_t acc = 0;
        uint32_t i;
        for (i = 0; i < n_in; i++) {
            acc += (input[i] + q->input_offset) * row[i];
        }
        if (bias != NULL) {
            acc = wrap_add(acc, bias[o]);
        }
        output[o] = output_stage(lrt_requantize_away(acc, q->multiplier[o], q->shift[o]), q);
    }
    return LRT_OK;
}

/* ---- SIMD kernels ---------------------------------------------------------------------- */

static uint32_t conv_k(const lrt_dims *in, const lrt_window *win)
{
    return (uint32_t)win->kernel_h * win->kernel_w * in->c;
}

uint32_t lrt_conv2d_s8_get_buffer_size(const lrt_dims *in, const lrt_window *win)
{
    uint32_t k;
    if (!LRT_HAVE_SIMD || in == NULL || win == NULL) {
        return 0;
    }
    k = conv_k(in, win);
    return LRT_CONV2D_S8_BUFFER_SIZE(k);
}

#if LRT_HAVE_SIMD
/* The im2col buffer holds the columns of two output pixels p, q as k words of int16 pairs,
 * values x + input_offset (0 at padding taps). Taps go in groups of four: word 4g holds
 * taps 0 and 2 of group g of p, 4g + 1 the same of q, 4g + 2 taps 1 and 3 of p, 4g + 3 of
 * q. That order is what SXTB16 makes of four weight bytes (bytes 0 and 2, then 1 and 3
 * after a rotation), so a weight word needs two SXTB16 and no repacking, and one weight
 * word feeds both pixels. The last k mod 4 taps take one word each: p low, q high (read by
 * SMLABB / SMLABT). Then two int8 patches (k rounded up to 4 each) for windows that need
 * padding or whose rows are not whole groups. */

static inline int32_t ld32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4); /* one LDR: unaligned word loads are allowed on these cores */
    return v;
}

static inline int32_t ror8(int32_t v)
{
    return (int32_t)(((uint32_t)v >> 8) | ((uint32_t)v << 24));
}

/* rows of two pixels' patches (n a multiple of 4) -> interleaved words. SXTAB16 adds the
 * offset to both halves; |x + offset| <= 255 cannot wrap a halfword. */
static void widen_pair(const int8_t *s0, const int8_t *s1, uint32_t n, int32_t off2, int32_t *dst)
{
    uint32_t j;
    for (j = 0; j < n; j += 4) {
        const int32_t v0 = ld32(s0 + j), v1 = ld32(s1 + j);
        dst[j] = __sxtab16(off2, v0);
        dst[j + 1] = __sxtab16(off2, v1);
        dst[j + 2] = __sxtab16(off2, ror8(v0));
        dst[j + 3] = __sxtab16(off2, ror8(v1));
    }
}

static int window_inside(const lrt_dims *in, const lrt_window *win, int32_t iy0, int32_t ix0)
{
    return iy0 >= 0 && ix0 >= 0 && iy0 + win->kernel_h <= (int32_t)in->h &&
           ix0 + win->kernel_w <= (int32_t)in->w;
}

/* The whole k-tap patch of one pixel as int8, padding taps = the zero point. */
static void gather(const lrt_dims *in, const lrt_window *win, int8_t zp, const int8_t *input,
                   int32_t iy0, int32_t ix0, int8_t *patch)
{
    const uint32_t row = (uint32_t)win->kernel_w * in->c;
    uint32_t ky, kx;
    for (ky = 0; ky < win->kernel_h; ky++) {
        const int32_t iy = iy0 + (int32_t)ky;
        int8_t *dst = patch + ky * row;
        if (iy < 0 || iy >= (int32_t)in->h) {
            memset(dst, zp, row);
        } else if (ix0 >= 0 && ix0 + win->kernel_w <= (int32_t)in->w) {
            memcpy(dst, input + ((uint32_t)iy * in->w + (uint32_t)ix0) * in->c, row);
        } else {
            for (kx = 0; kx < win->kernel_w; kx++) {
                const int32_t ix = ix0 + (int32_t)kx;
                if (ix < 0 || ix >= (int32_t)in->w) {
                    memset(dst + kx * in->c, zp, in->c);
                } else {
                    memcpy(dst + kx * in->c, input + ((uint32_t)iy * in->w + (uint32_t)ix) * in->c,
                           in->c);
                }
            }
        }
    }
}

static void im2col_pair(const lrt_dims *in, const lrt_window *win, int32_t input_offset,
                        const int8_t *input, const int32_t iy[2], const int32_t ix[2],
                        int32_t *cols, int8_t *patch)
{
    const uint32_t row = (uint32_t)win->kernel_w * in->c;
    const uint32_t k = win->kernel_h * row;
    const uint32_t k4 = k & ~3u;
    const uint32_t stride = (uint32_t)in->w * in->c;
    const int32_t off2 =
        (int32_t)(((uint32_t)input_offset & 0xFFFFu) | ((uint32_t)input_offset << 16));
    const int8_t zp = (int8_t)-input_offset; /* zp + offset = 0: padding adds nothing */
    const uint32_t kpad = (k + 3u) & ~3u;
    const int8_t *src[2];
    uint32_t step[2];
    uint32_t i, ky, j;
    for (i = 0; i < 2; i++) {
        if ((row & 3u) == 0 && window_inside(in, win, iy[i], ix[i])) {
            /* rows of whole groups straight from the input, no copy */
            src[i] = input + ((uint32_t)iy[i] * in->w + (uint32_t)ix[i]) * in->c;
            step[i] = stride;
        } else {
            gather(in, win, zp, input, iy[i], ix[i], patch + i * kpad);
            src[i] = patch + i * kpad;
            step[i] = row;
        }
    }
    if ((row & 3u) == 0) {
        for (ky = 0; ky < win->kernel_h; ky++) {
            widen_pair(src[0] + ky * step[0], src[1] + ky * step[1], row, off2, cols + ky * row);
        }
        return;
    }
    widen_pair(src[0], src[1], k4, off2, cols); /* both gathered: step == row */
    for (j = k4; j < k; j++) {
        cols[j] = (int32_t)(((uint32_t)(src[0][j] + input_offset) & 0xFFFFu) |
                            ((uint32_t)(src[1][j] + input_offset) << 16));
    }
}

/* acc[ch][px] += filters w0 and w0 + dw (k taps each) against the two columns. */
static void mac_2x2(const int8_t *w0, uint32_t dw, const int32_t *cols, uint32_t k, int32_t acc[4])
{
    /* w1 = w0 + dw: one pointer and an offset keep the loop in registers */
    const int32_t *const end4 = cols + (k & ~3u);
    const int32_t *const end = cols + k;
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (; cols < end4; cols += 4, w0 += 4) {
        const int32_t wa = ld32(w0), wb = ld32(w0 + dw);
        const int32_t x02 = cols[0], y02 = cols[1];
        const int32_t wa02 = __sxtb16(wa), wb02 = __sxtb16(wb);
        a00 = __smlad(wa02, x02, a00);
        a01 = __smlad(wa02, y02, a01);
        a10 = __smlad(wb02, x02, a10);
        a11 = __smlad(wb02, y02, a11);
        {
            const int32_t x13 = cols[2], y13 = cols[3];
            const int32_t wa13 = __sxtb16(ror8(wa)), wb13 = __sxtb16(ror8(wb));
            a00 = __smlad(wa13, x13, a00);
            a01 = __smlad(wa13, y13, a01);
            a10 = __smlad(wb13, x13, a10);
            a11 = __smlad(wb13, y13, a11);
        }
    }
    for (; cols < end; cols++, w0++) {
        const int32_t xy = cols[0];
        a00 = __smlabb(w0[0], xy, a00);
        a01 = __smlabt(w0[0], xy, a01);
        a10 = __smlabb(w0[dw], xy, a10);
        a11 = __smlabt(w0[dw], xy, a11);
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* output_stage in 32 bits: clamping the rescaled value to [-512, 511] first changes nothing
 * (|output_offset| <= 128 and the clamp bounds are within [-128, 127]). */
static inline int8_t output_stage_sat(int32_t scaled, int32_t output_offset, int32_t lo, int32_t hi)
{
    int32_t v = __ssat(scaled, 10) + output_offset;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

static int conv2d_simd(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                       const lrt_requant *q, const int8_t *input, const int8_t *weights,
                       const int32_t *bias, int8_t *output, void *buf)
{
    const uint32_t k = conv_k(in, win);
    const uint32_t n_pix = (uint32_t)out->h * out->w;
    const int32_t oo = q->output_offset, lo = q->act_min, hi = q->act_max;
    int32_t *cols = (int32_t *)buf;
    int8_t *patch = (int8_t *)(cols + k);
    uint32_t p;
    for (p = 0; p < n_pix; p += 2) {
        /* an odd last pixel is computed twice and stored once */
        const uint32_t p1 = p + 1 < n_pix ? p + 1 : p;
        int8_t *dst0 = output + p * out->c;
        int8_t *dst1 = output + p1 * out->c;
        int32_t iy[2], ix[2];
        uint16_t oc;
        iy[0] = (int32_t)(p / out->w) * win->stride_h - win->pad_top;
        ix[0] = (int32_t)(p % out->w) * win->stride_w - win->pad_left;
        iy[1] = (int32_t)(p1 / out->w) * win->stride_h - win->pad_top;
        ix[1] = (int32_t)(p1 % out->w) * win->stride_w - win->pad_left;
        im2col_pair(in, win, q->input_offset, input, iy, ix, cols, patch);
        for (oc = 0; oc < out->c; oc += 2) {
            /* an odd last channel runs against itself and is stored once */
            const uint16_t oc1 = (uint16_t)(oc + 1 < out->c ? oc + 1 : oc);
            const int32_t m0 = q->multiplier[oc], m1 = q->multiplier[oc1];
            const int s0 = q->shift[oc], s1 = q->shift[oc1];
            int32_t acc[4];
            acc[0] = acc[1] = bias != NULL ? bias[oc] : 0;
            acc[2] = acc[3] = bias != NULL ? bias[oc1] : 0;
            mac_2x2(weights + (uint32_t)oc * k, (uint32_t)(oc1 - oc) * k, cols, k, acc);
            dst0[oc] = output_stage_sat(requantize(acc[0], m0, s0), oo, lo, hi);
            dst1[oc] = output_stage_sat(requantize(acc[1], m0, s0), oo, lo, hi);
            dst0[oc1] = output_stage_sat(requantize(acc[2], m1, s1), oo, lo, hi);
            dst1[oc1] = output_stage_sat(requantize(acc[3], m1, s1), oo, lo, hi);
        }
    }
    return LRT_OK;
}

static int dense_simd(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
                      const int8_t *weights, const int32_t *bias, int8_t *output)
{
    const int32_t off = q->input_offset;
    const int32_t off2 = (int32_t)(((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16));
    const uint32_t n4 = n_in & ~3u;
    uint16_t o;
    for (o = 0; o < n_out; o += 2) {
        const uint16_t o1 = (uint16_t)(o + 1 < n_out ? o + 1 : o);
        const int8_t *r0 = weights + (uint32_t)o * n_in;
        const int8_t *r1 = weights + (uint32_t)o1 * n_in;
        int32_t a0 = bias != NULL ? bias[o] : 0;
        int32_t a1 = bias != NULL ? bias[o1] : 0;
        uint32_t i;
        for (i = 0; i < n4; i += 4) {
            const int32_t xv = ld32(input + i);
            const int32_t x02 = __sxtab16(off2, xv), x13 = __sxtab16(off2, ror8(xv));
            const int32_t wa = ld32(r0 + i), wb = ld32(r1 + i);
            a0 = __smlad(__sxtb16(wa), x02, a0);
            a0 = __smlad(__sxtb16(ror8(wa)), x13, a0);
            a1 = __smlad(__sxtb16(wb), x02, a1);
            a1 = __smlad(__sxtb16(ror8(wb)), x13, a1);
        }
        for (; i < n_in; i++) {
            a0 = __smlabb(input[i] + off, r0[i], a0);
            a1 = __smlabb(input[i] + off, r1[i], a1);
        }
        output[o] = output_stage(lrt_requantize_away(a0, q->multiplier[o], q->shift[o]), q);
        output[o1] = output_stage(lrt_requantize_away(a1, q->multiplier[o1], q->shift[o1]), q);
    }
    return LRT_OK;
}
#endif /* LRT_HAVE_SIMD */

int lrt_conv2d_s8_buf(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                      const lrt_requant *q, const int8_t *input, const int8_t *weights,
                      const int32_t *bias, int8_t *output, void *buf, uint32_t buf_size)
{
#if LRT_HAVE_SIMD
    /* the zero point must be an int8 to pad with it (always so for int8 TFLite models) */
    if (buf != NULL && conv_args_valid(in, out, win, q, input, weights, output) &&
        buf_size >= lrt_conv2d_s8_get_buffer_size(in, win) && ((uintptr_t)buf & 3u) == 0 &&
        q->input_offset >= -127 && q->input_offset <= 128) {
        return conv2d_simd(in, out, win, q, input, weights, bias, output, buf);
    }
#else
    (void)buf;
    (void)buf_size;
#endif
    return lrt_conv2d_s8(in, out, win, q, input, weights, bias, output);
}

int lrt_dense_s8(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
                 const int8_t *weights, const int32_t *bias, int8_t *output)
{
#if LRT_HAVE_SIMD
    if (input != NULL && weights != NULL && output != NULL && n_in != 0 &&
        requant_valid(q, n_out)) {
        return dense_simd(n_in, n_out, q, input, weights, bias, output);
    }
#endif
    return lrt_dense_s8_portable(n_in, n_out, q, input, weights, bias, output);
}

int lrt_maxpool2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win, int8_t act_min,
                     int8_t act_max, const int8_t *input, int8_t *output)
{
    uint16_t oy, ox, c;
    if (!window_valid(in, out, win) || input == NULL || output == NULL || act_min > act_max ||
        out->c != in->c) {
        return LRT_ERR_ARG;
    }
    for (oy = 0; oy < out->h; oy++) {
        const int32_t iy0 = (int32_t)oy * win->stride_h - win->pad_top;
        const int32_t ky0 = iy0 < 0 ? -iy0 : 0;
        const int32_t ky1 = LRT_MIN((int32_t)win->kernel_h, (int32_t)in->h - iy0);
        for (ox = 0; ox < out->w; ox++) {
            const int32_t ix0 = (int32_t)ox * win->stride_w - win->pad_left;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t kx1 = LRT_MIN((int32_t)win->kernel_w, (int32_t)in->w - ix0);
            int8_t *dst = output + ((uint32_t)oy * out->w + ox) * out->c;
            for (c = 0; c < in->c; c++) {
                int32_t m = -128;
                int32_t ky, kx;
                for (ky = ky0; ky < ky1; ky++) {
                    for (kx = kx0; kx < kx1; kx++) {
                        const int32_t v =
                            input[((uint32_t)(iy0 + ky) * in->w + (uint32_t)(ix0 + kx)) * in->c +
                                  c];
                        m = LRT_MAX(m, v);
                    }
                }
                m = LRT_CLAMP(m, (int32_t)act_min, (int32_t)act_max);
                dst[c] = (int8_t)m;
            }
        }
    }
    return LRT_OK;
}

int lrt_channel_affine_s8(uint32_t n_pixels, uint16_t channels, int32_t input_offset,
                          int32_t output_offset, int32_t act_min, int32_t act_max, const int8_t *w,
                          const int32_t *bias, const int8_t *shift, const int8_t *input,
                          int8_t *output)
{
    uint32_t p;
    uint16_t c;
    if (w == NULL || bias == NULL || shift == NULL || input == NULL || output == NULL ||
        channels == 0 || act_min < -128 || act_max > 127 || act_min > act_max) {
        return LRT_ERR_ARG;
    }
    for (c = 0; c < channels; c++) {
        if (shift[c] < -31 || shift[c] > 30) {
            return LRT_ERR_ARG;
        }
    }
    for (p = 0; p < n_pixels; p++) {
        const int8_t *src = input + (size_t)p * channels;
        int8_t *dst = output + (size_t)p * channels;
        for (c = 0; c < channels; c++) {
            int32_t acc = wrap_add((src[c] + input_offset) * w[c], bias[c]);
            int64_t v = (int64_t)requantize(acc, (int32_t)1 << 30, shift[c]) + output_offset;
            dst[c] = (int8_t)LRT_CLAMP(v, (int64_t)act_min, (int64_t)act_max);
        }
    }
    return LRT_OK;
}
