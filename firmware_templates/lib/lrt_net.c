/* lrt_net.c - forward pass over the layer table (lrt_net.h) with the int8 kernels. */
#include "lrt_net.h"

#include <string.h>

#include "lrt_fixmath.h"
#include "lrt_kernels.h"
#include "lrt_util.h"

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

static void layer_geometry(const lrt_layer *l, lrt_dims *in, lrt_dims *out, lrt_window *win)
{
    in->h = l->in_h;
    in->w = l->in_w;
    in->c = l->in_c;
    out->h = l->out_h;
    out->w = l->out_w;
    out->c = l->out_c;
    win->kernel_h = l->kernel_h;
    win->kernel_w = l->kernel_w;
    win->stride_h = l->stride_h;
    win->stride_w = l->stride_w;
    win->pad_top = l->pad_top;
    win->pad_left = l->pad_left;
}

uint32_t lrt_net_kernel_buffer_size(const lrt_net *net)
{
    uint32_t size = 0;
    uint8_t i;
    if (net == NULL || net->layers == NULL) {
        return 0;
    }
    for (i = 0; i < net->n_layers; i++) {
        lrt_dims in, out;
        lrt_window win;
        if (net->layers[i].kind != LRT_LAYER_CONV2D) {
            continue;
        }
        layer_geometry(&net->layers[i], &in, &out, &win);
        size = LRT_MAX(size, lrt_conv2d_s8_get_buffer_size(&in, &win));
    }
    return size;
}

static int64_t shr_round(int64_t a, unsigned k);

/* bias - round(head x / 2^LRT_HEAD_FRAC) per output: the residual's share of W x (lrt_net.head) */
static const int32_t *head_bias(const lrt_net *net, const lrt_layer *l, const int8_t *in)
{
    uint32_t m = lrt_layer_in_size(l), j;
    uint16_t o;
    for (o = 0; o < l->out_c; o++) {
        const int32_t *row = net->head + (uint32_t)o * m;
        int64_t c = 0, b;
        for (j = 0; j < m; j++) {
            c += (int64_t)row[j] * ((int32_t)in[j] + l->input_offset);
        }
        b = (int64_t)l->bias[o] - shr_round(c, LRT_HEAD_FRAC);
        net->head_bias[o] = (int32_t)LRT_CLAMP(b, (int64_t)INT32_MIN, (int64_t)INT32_MAX);
    }
    return net->head_bias;
}

static int layer_forward(const lrt_net *net, const lrt_layer *l, const int8_t *in, int8_t *out,
                         int last)
{
    lrt_dims in_dims, out_dims;
    lrt_window win;
    lrt_requant q;
    uint32_t expect_w;
    layer_geometry(l, &in_dims, &out_dims, &win);

    if (l->kind == LRT_LAYER_MAXPOOL2D) {
        return lrt_maxpool2d_s8(&in_dims, &out_dims, &win, l->act_min, l->act_max, in, out);
    }
    if (l->kind == LRT_LAYER_BATCHNORM) {
        if (l->bn == NULL || l->in_h != l->out_h || l->in_w != l->out_w || l->in_c != l->out_c) {
            return LRT_ERR_ARG;
        }
        return lrt_channel_affine_s8((uint32_t)l->out_h * l->out_w, l->out_c, l->input_offset,
                                     l->output_offset, l->act_min, l->act_max, l->bn->w,
                                     l->bn->bias, l->bn->shift, in, out);
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
        return lrt_conv2d_s8_buf(&in_dims, &out_dims, &win, &q, in, lrt_layer_weights(net, l),
                                 l->bias, out, net->kernel_buf, net->kernel_buf_size);
    }
    return lrt_dense_s8(lrt_layer_in_size(l), l->out_c, &q, in, lrt_layer_weights(net, l),
                        last && net->head != NULL ? head_bias(net, l, in) : l->bias, out);
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
    if ((net->head != NULL &&
         (net->head_bias == NULL || net->layers[net->n_layers - 1].kind != LRT_LAYER_DENSE)) ||
        lrt_layer_out_size(&net->layers[net->n_layers - 1]) != net->n_classes ||
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
        err = layer_forward(net, l, src, dst, i == net->n_layers - 1);
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

/* ---- streaming batch norm (formulation: lrt_net.h) ------------------------------------- */

#define BN_MEAN_MAX ((int64_t)1 << 24) /* |x_int| <= 255: |mean|, msq < 2^24 */
#define BN_VAR_MAX ((int64_t)1 << 32)
#define BN_F_MIN (-20)
#define BN_F_MAX (-1)

/* floor(n / d) by shift-and-subtract, 0 < d < 2^63: the forward path links no libgcc
 * helper (Cortex-M has no 64-bit divide; tests/c/test_kernels.py checks the symbols). */
static uint64_t udiv64(uint64_t n, uint64_t d)
{
    uint64_t q = 0, r = 0;
    int i;
    for (i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    return q;
}

/* a / b rounded half away from zero, b > 0, |a| + b / 2 < 2^64. */
static int64_t div_round(int64_t a, int64_t b)
{
    uint64_t mag = a < 0 ? (uint64_t)(-a) : (uint64_t)a;
    uint64_t q = udiv64(mag + (uint64_t)b / 2u, (uint64_t)b);
    return a < 0 ? -(int64_t)q : (int64_t)q;
}

/* a / 2^k rounded half away from zero */
static int64_t shr_round(int64_t a, unsigned k)
{
    uint64_t mag = a < 0 ? (uint64_t)(-a) : (uint64_t)a;
    uint64_t q = (mag + ((uint64_t)1 << (k - 1))) >> k;
    return a < 0 ? -(int64_t)q : (int64_t)q;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* round(num 2^-f / std_q) for f in [-20, -1] from one quotient qa = floor(num 2^21 / std_q):
 * with j = 20 + f it is floor((qa + 2^j) / 2^(j+1)) (the remainder cannot carry). */
static int64_t bn_gain(uint64_t qa, int f)
{
    unsigned j = (unsigned)(20 + f);
    return (int64_t)((qa + ((uint64_t)1 << j)) >> (j + 1));
}

int lrt_net_bn_refresh(const lrt_layer *l)
{
    const lrt_bn *bn;
    int64_t c, eps;
    uint16_t ch;
    if (l == NULL || l->kind != LRT_LAYER_BATCHNORM || l->bn == NULL) {
        return LRT_ERR_ARG;
    }
    bn = l->bn;
    if (bn->gamma == NULL || bn->beta == NULL || bn->mean == NULL || bn->msq == NULL ||
        bn->pow_q30 == NULL || bn->w == NULL || bn->shift == NULL || bn->bias == NULL ||
        bn->mu == NULL || bn->std_q == NULL) {
        return LRT_ERR_ARG;
    }
    /* the shifts below stay inside int64 for these formats */
    if (l->in_exp < -12 || l->in_exp > 3 || l->out_exp < -14 || l->out_exp > 5) {
        return LRT_ERR_UNSUPPORTED;
    }
    c = ((int64_t)1 << 30) - (int64_t)LRT_MIN(*bn->pow_q30, (uint32_t)1 << 30);
    eps = (int64_t)1 << (6 - 2 * l->in_exp);
    for (ch = 0; ch < l->out_c; ch++) {
        int64_t gamma = clamp64(bn->gamma[ch], -32768, 32767);
        int64_t beta = clamp64(bn->beta[ch], -32768, 32767);
        int64_t mu, var, w, std_q, b16;
        uint64_t num, qa;
        int f;
        if (c == 0) {
            mu = 0;
            var = (int64_t)1 << (16 - 2 * l->in_exp);
        } else {
            int64_t mean = clamp64(bn->mean[ch], -BN_MEAN_MAX, BN_MEAN_MAX);
            int64_t msq = clamp64(bn->msq[ch], 0, BN_MEAN_MAX);
            mu = clamp64(div_round(mean * ((int64_t)1 << 30), c), -BN_MEAN_MAX, BN_MEAN_MAX);
            var = div_round(msq * ((int64_t)1 << 38), c) - shr_round(mu * mu, 16);
        }
        var = clamp64(var, 0, BN_VAR_MAX) + eps;
        std_q = (int64_t)lrt_isqrt64((uint64_t)var << 28); /* < 2^31 */
        num = (uint64_t)(gamma < 0 ? -gamma : gamma) << (10 - l->out_exp);
        qa = udiv64(num << 21, (uint64_t)std_q);
        for (f = BN_F_MAX; f > BN_F_MIN && bn_gain(qa, f) < 64; f--) {
        }
        w = bn_gain(qa, f);
        if (w > 127 && f < BN_F_MAX) {
            f++;
            w = bn_gain(qa, f);
        }
        w = LRT_MIN(w, 127);
        if (gamma < 0) {
            w = -w;
        }
        b16 = beta * ((int64_t)1 << (4 - l->out_exp - f)) - w * mu;
        bn->w[ch] = (int8_t)w;
        bn->shift[ch] = (int8_t)(f + 1);
        bn->bias[ch] = (int32_t)clamp64(shr_round(b16, 16), INT32_MIN, INT32_MAX);
        bn->mu[ch] = (int32_t)mu;
        bn->std_q[ch] = (uint32_t)std_q;
    }
    return LRT_OK;
}

static int32_t get_le32(const int8_t *p)
{
    return (int32_t)lrt_get_le32((const uint8_t *)p);
}

int lrt_net_load_state(const lrt_net *net)
{
    uint8_t i;
    if (net == NULL || net->layers == NULL || net->blob == NULL) {
        return LRT_ERR_ARG;
    }
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        uint32_t need;
        uint16_t c;
        int rc;
        if (l->bias != NULL) {
            if (l->b_offset > net->blob_size || net->blob_size - l->b_offset < 4u * l->out_c) {
                return LRT_ERR_SIZE;
            }
            for (c = 0; c < l->out_c; c++) {
                l->bias[c] = get_le32(net->blob + l->b_offset + 4u * c);
            }
        }
        if (l->kind != LRT_LAYER_BATCHNORM) {
            continue;
        }
        need = lrt_bn_snapshot_size(l->out_c);
        if (l->bn == NULL) {
            return LRT_ERR_ARG;
        }
        if (l->b_offset > net->blob_size || net->blob_size - l->b_offset < need) {
            return LRT_ERR_SIZE;
        }
        for (c = 0; c < l->out_c; c++) {
            const int8_t *p = net->blob + l->b_offset + 4u * c;
            l->bn->gamma[c] = get_le32(p);
            l->bn->beta[c] = get_le32(p + 4u * l->out_c);
            l->bn->mean[c] = get_le32(p + 8u * l->out_c);
            l->bn->msq[c] = get_le32(p + 12u * l->out_c);
        }
        *l->bn->pow_q30 = (uint32_t)get_le32(net->blob + l->b_offset + 16u * l->out_c);
        rc = lrt_net_bn_refresh(l);
        if (rc != LRT_OK) {
            return rc;
        }
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
