/* lrt_backprop.h - integer backward kernels for the layers of lrt_net.h.
 *
 * Number formats
 * --------------
 * Back-propagated gradients are int8 tensors in block floating point: one power-of-two
 * exponent per tensor and per sample, real = g * 2^exp. Every requantization picks the
 * smallest right shift s >= 0 that brings max|value| into [-127, 127], so the largest
 * element uses (almost) the whole int8 range whatever the layer depth; values that already
 * fit are kept exactly (s = 0, no left shift). -128 is never produced, so negation is safe.
 * The paper's fixed range ([-1, 1), LSB 2^-7) makes deep-layer gradients underflow to zero;
 * a per-tensor exponent avoids that at the cost of one max pass.
 *
 * Rounding: every right shift rounds half away from zero (lrt_bp_round_shift):
 * 5 >> 1 -> 3, -5 >> 1 -> -3, 3 >> 1 -> 2 (1.5 -> 2), -3 >> 1 -> -2.
 *
 * Activations are the kept int8 forward outputs with their zero point zp (= -input_offset
 * of the consuming layer), real = (q - zp) * 2^in_exp. Weights are int8, real =
 * w * 2^weight_exp. Hence, for a layer with output gradient dz (exp e_dz):
 *   weight gradient  sum_p dz_p (x) (patch_p - zp)   int32, exp e_dz + in_exp
 *   bias gradient    sum_p dz_p                      int32, exp e_dz
 *   input gradient   sum dz * w                      int32 -> int8 block float,
 *                                                    exp e_dz + weight_exp + shift
 * All accumulation is int32; lrt_bp_layer_check() rejects layers where a sum could
 * overflow (more than 65535 output pixels, or more than 132104 terms per input gradient).
 *
 * Fused activation (clamp [act_min, act_max], i.e. ReLU clipped to the activation range,
 * or int8 saturation of a linear layer): clipped straight-through estimator. The gradient
 * passes where the kept output q satisfies act_min < q < act_max (strictly); at either
 * bound it is zero. So a ReLU output of exactly 0 passes nothing (derivative 0 at 0), and a
 * saturated output (also a saturated logit) passes nothing either.
 *
 * Conv weights are [out_c][kernel_h][kernel_w][in_c], i.e. the matrix W in R^{n x m},
 * n = out_c, m = kernel_h*kernel_w*in_c, row o / column j = (ky*kernel_w + kx)*in_c + ci.
 * A dense layer is handled as a conv whose kernel covers its whole input (kernel in_h x
 * in_w, one output pixel), which is the same memory layout. Padding taps ('same') read as
 * the zero point (contribute 0).
 *
 * No floats, no allocation; all buffers belong to the caller.
 */
#ifndef LRT_BACKPROP_H
#define LRT_BACKPROP_H

#include "lrt_net.h"

#define LRT_BP_GRAD_MAX 127

/* Largest number of output pixels (and of input-gradient terms) a layer may have so that the
 * int32 sums cannot overflow: 65535 * 127 * 255 < 2^31, 132104 * 127 * 128 < 2^31. */
#define LRT_BP_MAX_PIXELS 65535u
#define LRT_BP_MAX_DX_TERMS 132104u

/* Geometry of a weight or pool layer in conv form (dense: kernel = its whole input). */
typedef struct {
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c;
    uint16_t kh, kw;
    uint16_t sh, sw;
    uint16_t pt, pl;
} lrt_bp_geom;

void lrt_bp_geom_of(const lrt_layer *l, lrt_bp_geom *g);

/* Columns m of the weight matrix (kernel_h*kernel_w*in_c; dense: input size). 0 if no
 * weights. */
uint32_t lrt_bp_layer_m(const lrt_layer *l);

/* LRT_OK if the kernels below support the layer (power-of-two exponents where needed, sums
 * that fit int32, stride >= 1); LRT_ERR_UNSUPPORTED otherwise. */
int lrt_bp_layer_check(const lrt_layer *l);

/* v / 2^s rounded half away from zero, 0 <= s <= 63. */
int64_t lrt_bp_round_shift(int64_t v, unsigned s);

/* Smallest s >= 0 with round(max_abs / 2^s) <= 127 (rounding as lrt_bp_round_shift). */
unsigned lrt_bp_bfp_shift(uint64_t max_abs);

/* exp(d * 2^e) for d <= 0 in Q30 (1.0 = 2^30), relative error < 1e-4 (2^x from a 33-entry
 * table with linear interpolation). d > 0 is treated as 0. */
uint32_t lrt_bp_exp_q30(int32_t d, int e);

/* Gradient of softmax cross-entropy wrt the real logits, dL/dz = p - onehot(label):
 * logits real = (q - zero_point) * 2^logit_exp. Writes dz[n] in block floating point and
 * *dz_exp. The label's entry is computed as -(sum of the other probabilities), which keeps
 * its relative precision when p[label] is close to 1. If prob_q15 is non-NULL it receives
 * p in Q15 (rounded, for tests and diagnostics). LRT_ERR_ARG on bad arguments. */
int lrt_bp_softmax_xent(const int8_t *logits, uint16_t n, int32_t zero_point, int logit_exp,
                        uint16_t label, int8_t *dz, int16_t *dz_exp, uint16_t *prob_q15);

/* Clipped straight-through estimator of the layer's fused clamp, in place: g[i] = 0 unless
 * act_min < y[i] < act_max, y the kept forward output (lrt_layer_out_size elements).
 * Returns the number of non-zero gradients left. */
uint32_t lrt_bp_act_mask(const lrt_layer *l, const int8_t *y, int8_t *g);

/* Input gradient of a conv or dense layer: dx = W^T dz over every tap, requantized to int8
 * block floating point. w: the layer's weights; dz: [out_h*out_w*out_c] (already masked);
 * dx: [in_h*in_w*in_c]. *dx_exp = dz_exp + weight_exp + shift. Two passes over the sums
 * (max, then quantize) so no int32 buffer is needed. */
int lrt_bp_input_grad(const lrt_layer *l, const int8_t *w, const int8_t *dz, int16_t dz_exp,
                      int8_t *dx, int16_t *dx_exp);

/* The same result in one pass over the non-zero entries of dz (a scatter: each non-zero
 * dz[p][o] adds dz * W[o] to the window of p), with caller work memory of
 * lrt_bp_input_grad_work_size(l) bytes (4-byte aligned): kh rows of in_w*in_c int32 sums,
 * a ring in which an input row is finished once the output rows past it are done, and one
 * sign bit per input element. Finished rows are stored as magnitudes floor(|v| / 2^t) in dx
 * itself (uint8), t the smallest shift that fits the running max in 8 bits; when the max
 * grows, the stored rows are shifted down (floor of floor is floor). The final shift s of
 * the block float is >= t + 1 whenever t > 0, so rounding floor(|v| / 2^t) half away from
 * zero by s - t bits is exactly rounding |v| by s: bit for bit lrt_bp_input_grad.
 * LRT_BP_INPUT_GRAD_WORK_SIZE: the same bytes as a constant expression for static buffers,
 * kh the kernel height (dense: in_h), in_size = in_h * in_w * in_c. */
#define LRT_BP_INPUT_GRAD_WORK_SIZE(kh, in_w, in_c, in_size)                                       \
    (4u * (kh) * (in_w) * (in_c) + 4u * (((in_size) + 31u) / 32u))
uint32_t lrt_bp_input_grad_work_size(const lrt_layer *l);
int lrt_bp_input_grad_sparse(const lrt_layer *l, const int8_t *w, const int8_t *dz, int16_t dz_exp,
                             int8_t *dx, int16_t *dx_exp, void *work, uint32_t work_size);

/* Max-pool backward: each output gradient goes to the position of its window's maximum in x
 * (the pool's kept input; first maximum in row-major window order on ties, as TensorFlow's
 * CPU kernel). Overlapping windows add with saturation to [-127, 127]. The exponent is
 * unchanged. g_in: [in_h*in_w*in_c]. */
int lrt_bp_maxpool(const lrt_layer *l, const int8_t *x, const int8_t *g_out, int8_t *g_in);

/* One cell W[o][j] of the weight gradient: sum over output pixels p of
 * dz[p][o] * (x[tap j of p] - zp), read straight from the input feature map. If nz_terms is
 * non-NULL it receives the number of pixels whose dz[p][o] and input activation are both
 * non-zero (the paper's per-pixel SGD write accounting). */
int32_t lrt_bp_weight_grad_cell(const lrt_layer *l, const int8_t *x, const int8_t *dz, uint16_t o,
                                uint32_t j, uint32_t *nz_terms);

/* The whole weight gradient, dw[n*m] int32 (hosts and tests: needs an n x m buffer). */
void lrt_bp_weight_grad(const lrt_layer *l, const int8_t *x, const int8_t *dz, int32_t *dw);

/* Bias gradient of channel o: sum over output pixels of dz[p][o]. */
int32_t lrt_bp_bias_grad(const lrt_layer *l, const int8_t *dz, uint16_t o);
/* lrt_bp_bias_grad of every channel (out[out_c]) in one pass over the pixels. */
void lrt_bp_bias_grads(const lrt_layer *l, const int8_t *dz, int32_t *out);

/* 1 if dz[p][o] != 0 for some output pixel p (rows that are all zero need no work). */
int lrt_bp_channel_active(const lrt_layer *l, const int8_t *dz, uint16_t o);

/* ---- streaming batch norm (lrt_net.h) ----------------------------------------------------
 * The paper's backward pass: the running statistics are constants (no gradient flows into
 * them), so the layer is the per-channel affine y = G_c x + const with G_c = w_c 2^f_c, the
 * gain its forward pass used. With dy the masked output gradient (exp e_dy):
 *   input gradient  dx = dy w_c 2^(f_c + out_exp - in_exp), block float like the others
 *   beta gradient   sum_p dy_p,c                           (lrt_bp_bias_grad), exp e_dy
 *   gamma gradient  sum_p dy_p,c xhat_p,c, xhat = (x_int - mu) / std:
 *                   lrt_bp_bn_gamma_sum() / std_q[c] has exp e_dy + 6
 *                   (x_int 2^16 - mu is Q16, std_q is std x 2^22). */

/* Input gradient of a batch-norm layer; dy already masked by lrt_bp_act_mask. */
int lrt_bp_batchnorm(const lrt_layer *l, const int8_t *dy, int16_t dy_exp, int8_t *dx,
                     int16_t *dx_exp);

/* sum over pixels p of dy[p][c] * (x_int[p][c] 2^16 - mu[c]), x the layer's input. */
int64_t lrt_bp_bn_gamma_sum(const lrt_layer *l, const int8_t *x, const int8_t *dy, uint16_t c);

/* Per-sample weight gradient of a conv (or dense) layer for the LRT block update:
 * g[o * m + j] = sum over output pixels p of dz[p][o] * (x[tap j of p] - zp), int32, n x m
 * row-major (= the m x n block G^T column-major). Plain C reference kernel: pixels outer,
 * then output channels with a non-zero dz (dz is sparse), then the patch (contiguous).
 * |g| <= pixels * 127 * 255 < 2^31 for pixels <= LRT_BP_MAX_PIXELS. */
void lrt_conv_wgrad_s32(const lrt_layer *l, const int8_t *x, const int8_t *dz, int32_t *g);
/* Bytes of lrt_conv_wgrad_s32's output buffer: 4 * out_c * m. */
uint32_t lrt_conv_wgrad_size(const lrt_layer *l);

/* The k*k*c_in input patch under output pixel (oy, ox), in weight-row order (the im2col row
 * of that pixel), into patch[m]; padding taps get the zero point. */
void lrt_conv_gather_patch(const lrt_layer *l, const int8_t *x, uint16_t oy, uint16_t ox,
                           int8_t *patch);

#endif /* LRT_BACKPROP_H */
