/* bp_net_fallback.c - test-only stand-in for lib/lrt_net.c (lrt_net_forward over
 * lrt_kernels), used by the backprop/train tests while lrt_net.c does not exist. */
#include <string.h>

#include "lrt_kernels.h"
#include "lrt_net.h"

uint32_t lrt_net_act_buffer_size(const lrt_net *net)
{
    uint32_t n = (uint32_t)net->in_h * net->in_w * net->in_c;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        n = LRT_MAX(n, lrt_layer_out_size(&net->layers[i]));
    }
    return n;
}

uint16_t lrt_argmax_s8(const int8_t *x, uint16_t n)
{
    uint16_t i, best = 0;
    for (i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

int lrt_net_forward(const lrt_net *net, const int8_t *input, int8_t *logits, int8_t *act_a,
                    int8_t *act_b, int8_t *const *keep)
{
    const int8_t *cur = input;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        int8_t *out = (keep != NULL && keep[i] != NULL) ? keep[i] : ((cur == act_a) ? act_b : act_a);
        lrt_dims in = {l->in_h, l->in_w, l->in_c}, od = {l->out_h, l->out_w, l->out_c};
        lrt_window win = {l->kernel_h, l->kernel_w, l->stride_h, l->stride_w, l->pad_top,
                          l->pad_left};
        lrt_requant q = {l->input_offset, l->output_offset, l->act_min, l->act_max,
                         l->out_multiplier, l->out_shift};
        int rc = LRT_OK;
        switch (l->kind) {
        case LRT_LAYER_CONV2D:
            rc = lrt_conv2d_s8(&in, &od, &win, &q, cur, lrt_layer_weights(net, l), l->bias, out);
            break;
        case LRT_LAYER_DENSE:
            rc = lrt_dense_s8(lrt_layer_in_size(l), l->out_c, &q, cur, lrt_layer_weights(net, l),
                              l->bias, out);
            break;
        case LRT_LAYER_MAXPOOL2D:
            rc = lrt_maxpool2d_s8(&in, &od, &win, l->act_min, l->act_max, cur, out);
            break;
        case LRT_LAYER_FLATTEN:
            memmove(out, cur, lrt_layer_out_size(l));
            break;
        default:
            return LRT_ERR_UNSUPPORTED;
        }
        if (rc != LRT_OK) {
            return rc;
        }
        cur = out;
    }
    memcpy(logits, cur, net->n_classes);
    return LRT_OK;
}
