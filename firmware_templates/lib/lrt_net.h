/* lrt_net.h - the network as a table of layer descriptors.
 *
 * Generated code (lrt_model.c) holds only data: weights, per-channel rescale tables and an
 * array of lrt_layer. All logic (forward, backward, training schemes) is in lib/ and walks
 * that table, so it is tested once, on the host, independent of any model.
 *
 * Arithmetic is TFLite's int8 reference arithmetic (per-channel fixed-point multiplier +
 * shift, TFLite rounding), so any full-integer .tflite runs bit-exact. Models trained by the
 * toolchain additionally have power-of-two scales (the *_exp fields), which on-device
 * training relies on.
 */
#ifndef LRT_NET_H
#define LRT_NET_H

#include "lrt_common.h"

typedef enum {
    LRT_LAYER_CONV2D = 1,
    LRT_LAYER_MAXPOOL2D = 2,
    LRT_LAYER_DENSE = 3,
    LRT_LAYER_FLATTEN = 4,
    LRT_LAYER_BATCHNORM = 5,
} lrt_layer_kind;

#define LRT_EXP_NONE 127 /* *_exp value of imported models with non power-of-two scales */

/* Streaming batch norm (the paper: after each max-pool; running statistics instead of batch
 * statistics). Per channel, integer only; toolchain/lrt/batchnorm.py is the bit-exact twin.
 *
 * State (RAM working copy; a snapshot goes into the blob at b_offset with every commit, as
 * little-endian int32 gamma[C], beta[C], mean[C], msq[C], pow_q30):
 *   gamma, beta  affine parameters, LSB 2^-12, 16-bit range [-8, 8) (the bias format; they
 *                train every sample like biases)
 *   mean         running mean of x_int = x - zero point (input LSBs), Q16
 *   msq          running mean of x_int^2, Q8
 *   pow_q30      eta^step in Q30, eta = 1 - 1/batch; 2^30 = no statistics yet
 * Statistics step (one per training sample, lrt_train.c), per channel over the P = H*W
 * pixels: mu_i = round(sum x_int * 2^16 / P), msq_i = round(sum x_int^2 * 2^8 / P),
 * mean <- round((mean (B-1) + mu_i) / B), msq likewise, pow <- floor(pow (B-1) / B).
 * Rounding is half away from zero throughout.
 *
 * Forward tables (lrt_net_bn_refresh, after every change of the state): with
 * c = 2^30 - pow_q30 (the bias correction 1 - eta^step),
 *   mu    = round(mean 2^30 / c)                           Q16 input LSBs
 *   var   = round(msq 2^38 / c) - round(mu^2 / 2^16)       Q16 input LSBs^2
 *   (c = 0: mu = 0, var = 1 real: no normalisation yet)
 *   std_q = isqrt((max(var, 0) + eps) 2^28)                std in input LSBs x 2^22,
 *                                                          eps = 2^-10 real
 *   gain  G = |gamma| 2^(10 - out_exp) / std_q = w 2^f     output LSBs per input LSB:
 *           f the largest exponent in [-20, -1] with round(G 2^-f) >= 64, w = round(G 2^-f)
 *           (128 moves to f + 1; 127 at most), w negated for gamma < 0
 *   bias  = round((beta 2^(4 - out_exp - f) - w mu) / 2^16), saturated to int32 (accumulator
 *           units), so that G (x_int - mu) + beta = 2^f (x_int w + bias) in output LSBs, up
 *           to rounding.
 * The forward pass is then a per-channel 1x1 depthwise convolution in TFLite's arithmetic:
 *   y = clamp(MultiplyByQuantizedMultiplier((x - zp) w + bias, 2^30, f + 1) + out_zp)
 * which is DEPTHWISE_CONV_2D with filter scale 2^(f + out_exp - in_exp) per channel and an
 * int32 bias: the exported .tflite runs it bit-exact in the reference kernels. The output
 * is signed 8 bit in [-2, 2) (LSB 2^-6, zero point 0), the paper's signed activation. */
typedef struct {
    int32_t *gamma, *beta, *mean, *msq; /* [C] state, see above */
    uint32_t *pow_q30;                  /* one word */
    int8_t *w;                          /* [C] forward tables (lrt_net_bn_refresh) */
    int8_t *shift;                      /* [C] f + 1 (TFLite shift of the multiplier 2^f) */
    int32_t *bias;                      /* [C] */
    int32_t *mu;                        /* [C] corrected mean, Q16 (gamma gradient) */
    uint32_t *std_q;                    /* [C] std x 2^22 in input LSBs (gamma gradient) */
    uint16_t batch;                     /* B of eta = 1 - 1/B (>= 1) */
} lrt_bn;

typedef struct {
    uint8_t kind; /* lrt_layer_kind */
    uint8_t relu; /* 1 if a ReLU is fused (clamp only; kept for backward) */
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c; /* dense: out_h = out_w = 1 */
    uint8_t kernel_h, kernel_w;   /* conv kernel or pool window */
    uint8_t stride_h, stride_w;
    uint8_t pad_top, pad_left; /* 'same' padding offsets, 0 for 'valid' */
    int32_t input_offset;      /* -input zero point */
    int32_t output_offset;     /* output zero point */
    int8_t act_min, act_max;   /* int8 clamp (fused activation) */
    /* Weights live in the net's weight blob (memory-mapped NVM or RAM) at blob + w_offset:
     * conv [out_c][kernel_h][kernel_w][in_c]; dense [out_c][in_h*in_w*in_c]. Blob offsets are
     * 4-byte aligned. Unused (0) for pool/flatten. */
    uint32_t w_offset;
    uint32_t w_size; /* bytes = number of weight cells */
    /* Biases are updated every sample, so their working copy is in RAM (the paper keeps them
     * in high-endurance memory); a snapshot goes into the blob at every commit at b_offset. */
    int32_t *bias; /* [out_c], scale = input scale x weight scale[c] */
    uint32_t b_offset;
    const int32_t *out_multiplier; /* [out_c] TFLite quantized multiplier */
    const int8_t *out_shift;       /* [out_c] TFLite shift (>0 = left) */
    /* power-of-two formats, LRT_EXP_NONE for imported models */
    int8_t in_exp, out_exp, weight_exp, bias_exp;
    uint8_t trainable;
    /* batch norm only (NULL elsewhere); b_offset is where its state snapshot lives */
    lrt_bn *bn;
} lrt_layer;

typedef struct {
    const lrt_layer *layers;
    /* Base of the current weight set. Not const-qualified data of the table: the NVM layer
     * points it at the newest committed slot after every commit. */
    const int8_t *blob;
    uint32_t blob_size; /* weights + bias snapshot, bytes */
    uint8_t n_layers;
    uint16_t in_h, in_w, in_c;
    uint16_t n_classes;
    /* Scratch of the SIMD conv kernels (lrt_net_kernel_buffer_size bytes, 4-byte aligned);
     * NULL (or too small) runs the portable kernels, which give the same bits. */
    void *kernel_buf;
    uint32_t kernel_buf_size;
    /* Classifier residual (lrt_train.h, cfg.head_lr_q16), NULL for none: the last layer (dense,
     * n outputs, m inputs) then computes with the weights W - head / 2^LRT_HEAD_FRAC, head
     * [n][m] in 2^-LRT_HEAD_FRAC int8 LSBs. The int8 kernel stays as it is: the residual's
     * share of each output goes into a per-sample copy of the bias, head_bias [n]. */
    const int32_t *head;
    int32_t *head_bias;
} lrt_net;

/* Fraction bits of lrt_net.head: a residual finer than an LSB learns what one sample's
 * gradient moves, which rounds to no change of an int8 weight. */
#define LRT_HEAD_FRAC 16

/* Number of int8 elements of a layer's output / input tensor. */
static inline uint32_t lrt_layer_out_size(const lrt_layer *l)
{
    return (uint32_t)l->out_h * l->out_w * l->out_c;
}
static inline const int8_t *lrt_layer_weights(const lrt_net *net, const lrt_layer *l)
{
    return net->blob + l->w_offset;
}
static inline uint32_t lrt_layer_in_size(const lrt_layer *l)
{
    return (uint32_t)l->in_h * l->in_w * l->in_c;
}

/* Scratch needed by lrt_net_forward: two ping-pong activation buffers of this many bytes each. */
uint32_t lrt_net_act_buffer_size(const lrt_net *net);

/* Bytes of lrt_net.kernel_buf the forward pass uses: the largest conv layer's
 * lrt_conv2d_s8_get_buffer_size (0 in builds without SIMD kernels). */
uint32_t lrt_net_kernel_buffer_size(const lrt_net *net);

/* Run the network on one int8 input; writes n_classes int8 logits. act_a/act_b are
 * caller-provided scratch buffers of lrt_net_act_buffer_size() bytes each.
 * If `keep` is non-NULL, keep[i] receives layer i's output (used by backprop); it must point
 * to lrt_layer_out_size(&layers[i]) bytes each. */
int lrt_net_forward(const lrt_net *net, const int8_t *input, int8_t *logits, int8_t *act_a,
                    int8_t *act_b, int8_t *const *keep);

/* Bytes of a batch-norm layer's state snapshot in the blob: 4 (4 C + 1). */
static inline uint32_t lrt_bn_snapshot_size(uint16_t channels)
{
    return 4u * (4u * channels + 1u);
}

/* Recompute a batch-norm layer's forward tables from its state (see lrt_bn above).
 * LRT_ERR_ARG if l is not a batch-norm layer with state or has no power-of-two formats. */
int lrt_net_bn_refresh(const lrt_layer *l);

/* Load the RAM working copies from the blob's snapshot (biases, batch-norm state) and
 * refresh the batch-norm tables: at boot and after a pushed weight set. */
int lrt_net_load_state(const lrt_net *net);

/* argmax of logits, lowest index on ties (same as numpy.argmax). */
uint16_t lrt_argmax_s8(const int8_t *x, uint16_t n);

#endif /* LRT_NET_H */
