/* lrt_net.c - forward pass over the layer table (lrt_net.h) with the int8 kernels. */
#include "lrt_net.h"

#include <string.h>

#include "lrt_kernels.h"

uint32_t lrt_net_act_buffer_size(const lrt_net *net)
{
    uint32_t size = 0;
    uint8_t i;
    if (net == NULL || net->layers == NULL) {
        return 0;
    }
    for (i = 0; i < net->n_layers; i++) {
        size = LRT_MAX(size, lrt_layer_out_size(&net->layers[i]));
    }
    return size;
}

static int layer_forward(const lrt_net *net, const lrt_layer *l, const int8_t *in, int8_t *out)
{
    const lrt_dims in_dims = {l->in_h, l->in_w, l->in_c};
    const lrt_dims out_dims = {l->out_h, l->out_w, l->out_c};
    const lrt_window win = {l->kernel_h, l->kernel_w, l->stride_h, l->stride_w,
                            l->pad_top, l->pad_left};
    lrt_requant q;
    uint32_t expect_w;

    if (l->kind == LRT_LAYER_MAXPOOL2D) {
        return lrt_maxpool2d_s8(&in_dims, &out_dims, &win, l->act_min, l->act_max, in, out);
    }
    if (l->kind == LRT_LAYER_CONV2D) {
        expect_w = (uint32_t)l->out_c * l->kernel_h * l->kernel_w * l->in_c;
    } else if (l->kind == LRT_LAYER_DENSE) {
        expect_w = (uint32_t)l->out_c * lrt_layer_in_size(l);
    } else {
        return LRT_ERR_UNSUPPORTED;
    }
    /* A table that does not match its blob would read past the weights: refuse it. */
    if (l->w_size != expect_w || l->w_offset > net->blob_size ||
        net->blob_size - l->w_offset < l->w_size) {
        return LRT_ERR_SIZE;
    }
    q.input_offset = l->input_offset;
    q.output_offset = l->output_offset;
    q.act_min = l->act_min;
    q.act_max = l->act_max;
    q.multiplier = l->out_multiplier;
    q.shift = l->out_shift;
    if (l->kind == LRT_LAYER_CONV2D) {
        return lrt_conv2d_s8(&in_dims, &out_dims, &win, &q, in, lrt_layer_weights(net, l), l->bias,
                             out);
    }
    return lrt_dense_s8(lrt_layer_in_size(l), l->out_c, &q, in, lrt_layer_weights(net, l), l->bias,
                        out);
}

int lrt_net_forward(const lrt_net *net, const int8_t *input, int8_t *logits, int8_t *act_a,
                    int8_t *act_b, int8_t *const *keep)
{
    const int8_t *src = input;
    uint8_t i;
    if (net == NULL || net->layers == NULL || net->blob == NULL || net->n_layers == 0 ||
        input == NULL || logits == NULL || act_a == NULL || act_b == NULL) {
        return LRT_ERR_ARG;
    }
    if (lrt_layer_out_size(&net->layers[net->n_layers - 1]) != net->n_classes ||
        lrt_layer_in_size(&net->layers[0]) != (uint32_t)net->in_h * net->in_w * net->in_c) {
        return LRT_ERR_SIZE;
    }
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        int8_t *kept = keep != NULL ? keep[i] : NULL;
        int8_t *dst;
        int err;
        if (i > 0 && lrt_layer_in_size(l) != lrt_layer_out_size(&net->layers[i - 1])) {
            return LRT_ERR_SIZE;
        }
        if (l->kind == LRT_LAYER_FLATTEN) {
            /* NHWC memory already is the flattened vector. */
            if (lrt_layer_in_size(l) != lrt_layer_out_size(l)) {
                return LRT_ERR_SIZE;
            }
            if (kept != NULL) {
                memcpy(kept, src, lrt_layer_out_size(l));
                src = kept;
            }
            continue;
        }
        /* Kept outputs are written in place, so backprop gets them without a copy; the last
         * layer writes straight into logits; everything else ping-pongs. */
        if (kept != NULL) {
            dst = kept;
        } else if (i == net->n_layers - 1) {
            dst = logits;
        } else {
            dst = (src == act_a) ? act_b : act_a;
        }
        err = layer_forward(net, l, src, dst);
        if (err != LRT_OK) {
            return err;
        }
        src = dst;
    }
    if (src != logits) {
        memcpy(logits, src, net->n_classes);
    }
    return LRT_OK;
}

uint16_t lrt_argmax_s8(const int8_t *x, uint16_t n)
{
    uint16_t best = 0;
    uint16_t i;
    if (x == NULL) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}
