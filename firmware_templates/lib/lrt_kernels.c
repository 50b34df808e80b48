/* lrt_kernels.c - int8 forward kernels (see lrt_kernels.h for the arithmetic). */
#include "lrt_kernels.h"

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

int32_t lrt_sat_round_doubling_high_mul(int32_t a, int32_t b)
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

int32_t lrt_rounding_divide_by_pot(int32_t x, int exponent)
{
    const uint32_t mask = (uint32_t)(((uint64_t)1 << exponent) - 1u);
    const uint32_t remainder = (uint32_t)x & mask;
    const uint32_t threshold = (mask >> 1) + (x < 0 ? 1u : 0u);
    return floor_shift(x, exponent) + (remainder > threshold ? 1 : 0);
}

int32_t lrt_requantize(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    /* TFLite computes x * (1 << left) in int32; a wrapped product gives the same bits. */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return lrt_rounding_divide_by_pot(lrt_sat_round_doubling_high_mul(shifted, multiplier), right);
}

int32_t lrt_requantize_away(int32_t x, int32_t multiplier, int shift)
{
    const int total = 31 - shift; /* 1..62 */
    const uint64_t mag = x < 0 ? (uint64_t)(-(int64_t)x) : (uint64_t)x;
    const uint64_t r = (mag * (uint64_t)(uint32_t)multiplier + ((uint64_t)1 << (total - 1))) >> total;
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
    if (q->act_min < -128 || q->act_max > 127 || q->act_min > q->act_max) {
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

int lrt_conv2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                  const lrt_requant *q, const int8_t *input, const int8_t *weights,
                  const int32_t *bias, int8_t *output)
{
    uint32_t filter_size;
    uint16_t oy, ox, oc;
    if (!window_valid(in, out, win) || input == NULL || weights == NULL || output == NULL ||
        !requant_valid(q, out->c)) {
        return LRT_ERR_ARG;
    }
    filter_size = (uint32_t)win->kernel_h * win->kernel_w * in->c;
    for (oy = 0; oy < out->h; oy++) {
        const int32_t iy0 = (int32_t)oy * win->stride_h - win->pad_top;
        const int32_t ky0 = iy0 < 0 ? -iy0 : 0;
        const int32_t ky1 = LRT_MIN((int32_t)win->kernel_h, (int32_t)in->h - iy0);
        for (ox = 0; ox < out->w; ox++) {
            const int32_t ix0 = (int32_t)ox * win->stride_w - win->pad_left;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t kx1 = LRT_MIN((int32_t)win->kernel_w, (int32_t)in->w - ix0);
            int8_t *dst = output + ((uint32_t)oy * out->w + ox) * out->c;
            for (oc = 0; oc < out->c; oc++) {
                const int8_t *filter = weights + (uint32_t)oc * filter_size;
                int32_t acc = 0;
                int32_t ky, kx;
                for (ky = ky0; ky < ky1; ky++) {
                    for (kx = kx0; kx < kx1; kx++) {
                        const int8_t *px =
                            input + ((uint32_t)(iy0 + ky) * in->w + (uint32_t)(ix0 + kx)) * in->c;
                        const int8_t *wk = filter + ((uint32_t)ky * win->kernel_w + (uint32_t)kx) * in->c;
                        uint16_t c;
                        for (c = 0; c < in->c; c++) {
                            acc += (px[c] + q->input_offset) * wk[c];
                        }
                    }
                }
                if (bias != NULL) {
                    acc = wrap_add(acc, bias[oc]);
                }
                dst[oc] = output_stage(lrt_requantize(acc, q->multiplier[oc], q->shift[oc]), q);
            }
        }
    }
    return LRT_OK;
}

int lrt_dense_s8(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
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

int lrt_maxpool2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                     int8_t act_min, int8_t act_max, const int8_t *input, int8_t *output)
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
                            input[((uint32_t)(iy0 + ky) * in->w + (uint32_t)(ix0 + kx)) * in->c + c];
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
                          int32_t output_offset, int32_t act_min, int32_t act_max,
                          const int8_t *w, const int32_t *bias, const int8_t *shift,
                          const int8_t *input, int8_t *output)
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
            int64_t v = (int64_t)lrt_requantize(acc, (int32_t)1 << 30, shift[c]) + output_offset;
            dst[c] = (int8_t)LRT_CLAMP(v, (int64_t)act_min, (int64_t)act_max);
        }
    }
    return LRT_OK;
}
