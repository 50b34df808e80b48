/* lrt_kernels.h - int8 forward kernels, bit-exact with TFLite's reference kernels.
 *
 * Plain C99 reference kernels in the style of CMSIS-NN: NHWC int8 activations, OHWI int8
 * weights, int32 bias, int32 accumulation of (input + input_offset) * weight, then a
 * per-channel fixed-point rescale, + output_offset, clamp to [act_min, act_max].
 *
 * The rescale differs between TFLite's kernels, and each kernel here copies its TFLite
 * counterpart (measured against ai-edge-litert's BUILTIN_REF kernels, tests/golden):
 *  - conv2d: MultiplyByQuantizedMultiplier with gemmlowp's double rounding
 *    (lrt_requantize);
 *  - dense: TFLite's reference FULLY_CONNECTED rescales in double precision,
 *    round(acc * scale) half away from zero; lrt_requantize_away does that with one
 *    integer rounding of acc * multiplier * 2^(shift - 31) (exact whenever the scale has at
 *    most 31 significant bits, e.g. every power-of-two model).
 *
 * The int32 accumulator cannot overflow for fan-ins up to 65793 (|term| <= 255 * 128).
 * No floats, no globals, no allocation.
 */
#ifndef LRT_KERNELS_H
#define LRT_KERNELS_H

#include "lrt_common.h"

typedef struct {
    uint16_t h, w, c;
} lrt_dims;

/* Sliding window of conv / pool. pad_top/pad_left: 'same' padding before the input
 * (TFLite puts the odd extra pixel after); taps outside the input are skipped. */
typedef struct {
    uint8_t kernel_h, kernel_w;
    uint8_t stride_h, stride_w;
    uint8_t pad_top, pad_left;
} lrt_window;

/* Output stage of conv / dense. */
typedef struct {
    int32_t input_offset;      /* -input zero point, in [-127, 128] */
    int32_t output_offset;     /* output zero point, in [-128, 127] */
    int32_t act_min, act_max;  /* clamp, within [-128, 127] */
    const int32_t *multiplier; /* [out_c], in [0, 2^31) */
    const int8_t *shift;       /* [out_c], in [-31, 30]; > 0 = left shift */
} lrt_requant;

/* gemmlowp SaturatingRoundingDoublingHighMul: (a * b * 2) >> 32, rounded, saturating. */
int32_t lrt_sat_round_doubling_high_mul(int32_t a, int32_t b);
/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero, 0 <= exp <= 31. */
int32_t lrt_rounding_divide_by_pot(int32_t x, int exponent);
/* TFLite MultiplyByQuantizedMultiplier (default double rounding). */
int32_t lrt_requantize(int32_t x, int32_t multiplier, int shift);
/* round(x * multiplier * 2^(shift - 31)) half away from zero, saturated to int32. */
int32_t lrt_requantize_away(int32_t x, int32_t multiplier, int shift);

/* SIMD kernels (docs/KERNELS.md). Built when the compiler gets -DLRT_KERNELS_SIMD=1, which
 * the toolchain passes for cores with the DSP extension (Cortex-M4/M7/M33/M55); they use the
 * ACLE intrinsics SXTB16/SXTAB16/SMLAD, two 16-bit multiply-accumulates per instruction.
 * The sums are the same integers as the portable kernels' (int32, no overflow below the
 * fan-in limit; the bias is added modulo 2^32 in both), so both give the same bits. */
#if defined(LRT_KERNELS_SIMD) && LRT_KERNELS_SIMD
#if !defined(__ARM_FEATURE_DSP)
#error "LRT_KERNELS_SIMD=1 needs a core with the DSP extension (__ARM_FEATURE_DSP)"
#endif
#define LRT_HAVE_SIMD 1
#else
#define LRT_HAVE_SIMD 0
#endif

/* 1 if this build has the SIMD kernels. */
int lrt_kernels_simd(void);

/* Convolution: input [in->h][in->w][in->c], weights [out->c][kernel_h][kernel_w][in->c],
 * bias [out->c] or NULL, output [out->h][out->w][out->c]. Returns LRT_OK or LRT_ERR_ARG.
 * The portable kernel (no buffer). */
int lrt_conv2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                  const lrt_requant *q, const int8_t *input, const int8_t *weights,
                  const int32_t *bias, int8_t *output);

/* Bytes of the caller buffer lrt_conv2d_s8_buf needs for its SIMD kernel: the im2col columns
 * of two output pixels as int16 plus two int8 patches, K = kernel_h * kernel_w * in->c:
 * 4 K + 2 (K rounded up to a multiple of 4). 0 in builds without SIMD kernels.
 * LRT_CONV2D_S8_BUFFER_SIZE is the same size as a constant expression, for static buffers
 * (SIMD builds). */
#define LRT_CONV2D_S8_BUFFER_SIZE(k) (4u * (k) + 2u * (((k) + 3u) & ~3u))
uint32_t lrt_conv2d_s8_get_buffer_size(const lrt_dims *in, const lrt_window *win);

/* lrt_conv2d_s8 with a caller buffer (4-byte aligned): the SIMD kernel when the build has
 * one and buf_size >= lrt_conv2d_s8_get_buffer_size(), otherwise the portable kernel. */
int lrt_conv2d_s8_buf(const lrt_dims *in, const lrt_dims *out, const lrt_window *win,
                      const lrt_requant *q, const int8_t *input, const int8_t *weights,
                      const int32_t *bias, int8_t *output, void *buf, uint32_t buf_size);

/* Fully connected: input [n_in], weights [n_out][n_in], bias [n_out] or NULL. The SIMD
 * kernel in SIMD builds (no buffer: the input is widened in registers), else the portable
 * one; lrt_dense_s8_portable is always the portable kernel. */
int lrt_dense_s8(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
                 const int8_t *weights, const int32_t *bias, int8_t *output);
int lrt_dense_s8_portable(uint32_t n_in, uint16_t n_out, const lrt_requant *q, const int8_t *input,
                          const int8_t *weights, const int32_t *bias, int8_t *output);

/* Max pool over kernel_h x kernel_w windows (padded taps ignored), then clamp. Input and
 * output share one quantization, so no rescale. */
int lrt_maxpool2d_s8(const lrt_dims *in, const lrt_dims *out, const lrt_window *win, int8_t act_min,
                     int8_t act_max, const int8_t *input, int8_t *output);

/* Per-channel affine (batch norm, lrt_net.h): TFLite's DEPTHWISE_CONV_2D with a 1x1
 * kernel, depth multiplier 1 and a multiplier 2^30 per channel:
 *   output[p][c] = clamp(lrt_requantize((input[p][c] + input_offset) w[c] + bias[c],
 *                                       2^30, shift[c]) + output_offset, act_min, act_max)
 * over n_pixels pixels of c channels (NHWC). shift in [-31, 30]. */
int lrt_channel_affine_s8(uint32_t n_pixels, uint16_t channels, int32_t input_offset,
                          int32_t output_offset, int32_t act_min, int32_t act_max, const int8_t *w,
                          const int32_t *bias, const int8_t *shift, const int8_t *input,
                          int8_t *output);

#endif /* LRT_KERNELS_H */
