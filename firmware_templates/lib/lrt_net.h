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
} lrt_layer_kind;

#define LRT_EXP_NONE 127 /* *_exp value of imported models with non power-of-two scales */

typedef struct {
    uint8_t kind; /* lrt_layer_kind */
    uint8_t relu; /* 1 if a ReLU is fused (clamp only; kept for backward) */
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c; /* dense: out_h = out_w = 1 */
    uint8_t kernel_h, kernel_w;   /* conv kernel or pool window */
    uint8_t stride_h, stride_w;
    uint8_t pad_top, pad_left;    /* 'same' padding offsets, 0 for 'valid' */
    int32_t input_offset;         /* -input zero point */
    int32_t output_offset;        /* output zero point */
    int8_t act_min, act_max;      /* int8 clamp (fused activation) */
    /* Weights live in the net's weight blob (memory-mapped NVM or RAM) at blob + w_offset:
     * conv [out_c][kernel_h][kernel_w][in_c]; dense [out_c][in_h*in_w*in_c]. Blob offsets are
     * 4-byte aligned. Unused (0) for pool/flatten. */
    uint32_t w_offset;
    uint32_t w_size;                /* bytes = number of weight cells */
    /* Biases are updated every sample, so their working copy is in RAM (the paper keeps them
     * in high-endurance memory); a snapshot goes into the blob at every commit at b_offset. */
    int32_t *bias;                  /* [out_c], scale = input scale x weight scale[c] */
    uint32_t b_offset;
    const int32_t *out_multiplier;  /* [out_c] TFLite quantized multiplier */
    const int8_t *out_shift;        /* [out_c] TFLite shift (>0 = left) */
    /* power-of-two formats, LRT_EXP_NONE for imported models */
    int8_t in_exp, out_exp, weight_exp, bias_exp;
    uint8_t trainable;
} lrt_layer;

typedef struct {
    const lrt_layer *layers;
    /* Base of the current weight set. Not const-qualified data of the table: the NVM layer
     * points it at the newest committed slot after every commit. */
    const int8_t *blob;
    uint32_t blob_size;             /* weights + bias snapshot, bytes */
    uint8_t n_layers;
    uint16_t in_h, in_w, in_c;
    uint16_t n_classes;
} lrt_net;

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

/* Run the network on one int8 input; writes n_classes int8 logits. act_a/act_b are
 * caller-provided scratch buffers of lrt_net_act_buffer_size() bytes each.
 * If `keep` is non-NULL, keep[i] receives layer i's output (used by backprop); it must point
 * to lrt_layer_out_size(&layers[i]) bytes each. */
int lrt_net_forward(const lrt_net *net, const int8_t *input, int8_t *logits, int8_t *act_a,
                    int8_t *act_b, int8_t *const *keep);

/* argmax of logits, lowest index on ties (same as numpy.argmax). */
uint16_t lrt_argmax_s8(const int8_t *x, uint16_t n);

#endif /* LRT_NET_H */
