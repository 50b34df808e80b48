/* bp_driver.c - test driver for lrt_backprop / lrt_train / lrt_wstore.
 *
 * usage: bp_driver NET MODE [args]   (binary little-endian I/O on stdin/stdout)
 *   NET      net file written by harness/backprop.py (layer table, tables, blob)
 *   layer L  kernels of layer L on one (x, y, g) read from stdin
 *   softmax  softmax cross-entropy gradient of logits read from stdin
 *   maxnorm  max-norm divisors of a sequence of maxima
 *   wstore   RAM weight store checks (prints the number of failures)
 *   grads    per sample: forward, then every trainable layer's weight/bias gradient (batch
 *            norm: gamma and beta gradient sums)
 *   bntables every batch-norm layer's state and forward tables after loading
 *   train SCHEME MAXNORM LR_Q16 COUNTERS FLUSH_EVERY [REAL_UNITS [DUMP BATCH_CONV BATCH_DENSE
 *         RHO_MIN_Q16 POLICY GATE_ERRORS GATE_CELLS_Q16 SAMPLES_PER_COMMIT BURST]]
 *            the online protocol over samples from stdin, then statistics and the blob;
 *            DUMP 1: each sample's weight gradients (as grads) then -1 before its logits
 * Test code: it may allocate; the library may not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_backprop.h"
#include "lrt_net.h"
#include "lrt_train.h"
#include "lrt_wstore.h"

#define NET_MAGIC 0x544E5042 /* "BPNT" */

static void die(const char *what, int rc)
{
    fprintf(stderr, "bp_driver: %s (%d %s)\n", what, rc, lrt_err_str(rc));
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (p == NULL) {
        die("out of memory", LRT_ERR_NOSPACE);
    }
    return p;
}

static void read_exact(FILE *f, void *buf, size_t n)
{
    if (n && fread(buf, 1, n, f) != n) {
        die("short read", LRT_ERR_EOF);
    }
}

static int32_t rd32(FILE *f)
{
    uint8_t b[4];
    read_exact(f, b, 4);
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                     ((uint32_t)b[3] << 24));
}

static void wr32(int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t b[4];
    b[0] = (uint8_t)u;
    b[1] = (uint8_t)(u >> 8);
    b[2] = (uint8_t)(u >> 16);
    b[3] = (uint8_t)(u >> 24);
    fwrite(b, 1, 4, stdout);
}

static void wr64(uint64_t v)
{
    wr32((int32_t)(uint32_t)v);
    wr32((int32_t)(uint32_t)(v >> 32));
}

static void wrbytes(const void *p, size_t n)
{
    fwrite(p, 1, n, stdout);
}

/* ---- net file ------------------------------------------------------------------------- */

typedef struct {
    lrt_net net;
    lrt_layer *layers;
    int8_t *blob;
} test_net;

static void load_net(const char *path, test_net *tn)
{
    FILE *f = fopen(path, "rb");
    int32_t n, i;
    if (f == NULL) {
        die("cannot open net file", LRT_ERR_IO);
    }
    if (rd32(f) != NET_MAGIC) {
        die("bad net file", LRT_ERR_CORRUPT);
    }
    memset(tn, 0, sizeof(*tn));
    n = rd32(f);
    tn->net.n_layers = (uint8_t)n;
    tn->net.in_h = (uint16_t)rd32(f);
    tn->net.in_w = (uint16_t)rd32(f);
    tn->net.in_c = (uint16_t)rd32(f);
    tn->net.n_classes = (uint16_t)rd32(f);
    tn->net.blob_size = (uint32_t)rd32(f);
    tn->layers = xmalloc(sizeof(lrt_layer) * (size_t)n);
    for (i = 0; i < n; i++) {
        lrt_layer *l = &tn->layers[i];
        l->kind = (uint8_t)rd32(f);
        l->relu = (uint8_t)rd32(f);
        l->in_h = (uint16_t)rd32(f);
        l->in_w = (uint16_t)rd32(f);
        l->in_c = (uint16_t)rd32(f);
        l->out_h = (uint16_t)rd32(f);
        l->out_w = (uint16_t)rd32(f);
        l->out_c = (uint16_t)rd32(f);
        l->kernel_h = (uint8_t)rd32(f);
        l->kernel_w = (uint8_t)rd32(f);
        l->stride_h = (uint8_t)rd32(f);
        l->stride_w = (uint8_t)rd32(f);
        l->pad_top = (uint8_t)rd32(f);
        l->pad_left = (uint8_t)rd32(f);
        l->input_offset = rd32(f);
        l->output_offset = rd32(f);
        l->act_min = (int8_t)rd32(f);
        l->act_max = (int8_t)rd32(f);
        l->w_offset = (uint32_t)rd32(f);
        l->w_size = (uint32_t)rd32(f);
        l->b_offset = (uint32_t)rd32(f);
        l->in_exp = (int8_t)rd32(f);
        l->out_exp = (int8_t)rd32(f);
        l->weight_exp = (int8_t)rd32(f);
        l->bias_exp = (int8_t)rd32(f);
        l->trainable = (uint8_t)rd32(f);
        if (l->kind == LRT_LAYER_BATCHNORM) {
            lrt_bn *bn = xmalloc(sizeof(lrt_bn));
            int32_t *arrs[4];
            uint16_t o;
            int k;
            for (k = 0; k < 4; k++) {
                arrs[k] = xmalloc(4u * l->out_c);
                for (o = 0; o < l->out_c; o++) {
                    arrs[k][o] = rd32(f);
                }
            }
            bn->gamma = arrs[0];
            bn->beta = arrs[1];
            bn->mean = arrs[2];
            bn->msq = arrs[3];
            bn->pow_q30 = xmalloc(4);
            *bn->pow_q30 = (uint32_t)rd32(f);
            bn->batch = (uint16_t)rd32(f);
            bn->w = xmalloc(l->out_c);
            bn->shift = xmalloc(l->out_c);
            bn->bias = xmalloc(4u * l->out_c);
            bn->mu = xmalloc(4u * l->out_c);
            bn->std_q = xmalloc(4u * l->out_c);
            l->bn = bn;
            if (lrt_net_bn_refresh(l) != LRT_OK) {
                die("bn refresh", LRT_ERR_ARG);
            }
        }
        if (l->kind == LRT_LAYER_CONV2D || l->kind == LRT_LAYER_DENSE) {
            int32_t *mult = xmalloc(4u * l->out_c);
            int8_t *shift = xmalloc(l->out_c);
            int32_t *bias = xmalloc(4u * l->out_c);
            uint16_t o;
            for (o = 0; o < l->out_c; o++) {
                mult[o] = rd32(f);
            }
            for (o = 0; o < l->out_c; o++) {
                shift[o] = (int8_t)rd32(f);
            }
            for (o = 0; o < l->out_c; o++) {
                bias[o] = rd32(f);
            }
            l->out_multiplier = mult;
            l->out_shift = shift;
            l->bias = bias;
        }
    }
    tn->blob = xmalloc(tn->net.blob_size);
    read_exact(f, tn->blob, tn->net.blob_size);
    fclose(f);
    tn->net.layers = tn->layers;
    tn->net.blob = tn->blob;
}

/* A batch-norm layer's state and forward tables: gamma, beta, mean, msq, pow, w, shift, bias,
 * mu, std_q. */
static void write_bn(const lrt_layer *l)
{
    const lrt_bn *bn = l->bn;
    uint16_t o;
    for (o = 0; o < l->out_c; o++) {
        wr32(bn->gamma[o]);
    }
    for (o = 0; o < l->out_c; o++) {
        wr32(bn->beta[o]);
    }
    for (o = 0; o < l->out_c; o++) {
        wr32(bn->mean[o]);
    }
    for (o = 0; o < l->out_c; o++) {
        wr32(bn->msq[o]);
    }
    wr32((int32_t)*bn->pow_q30);
    for (o = 0; o < l->out_c; o++) {
        wr32(bn->w[o]);
        wr32(bn->shift[o]);
        wr32(bn->bias[o]);
        wr32(bn->mu[o]);
        wr32((int32_t)bn->std_q[o]);
    }
}

/* bntables: every batch-norm layer's state and tables as loaded (lrt_net_bn_refresh). */
static void mode_bntables(test_net *tn)
{
    uint8_t i;
    for (i = 0; i < tn->net.n_layers; i++) {
        if (tn->layers[i].kind == LRT_LAYER_BATCHNORM) {
            write_bn(&tn->layers[i]);
        }
    }
}

/* ---- layer kernels -------------------------------------------------------------------------- */

static void mode_layer(test_net *tn, int li)
{
    const lrt_layer *l = &tn->layers[li];
    uint32_t in = lrt_layer_in_size(l), out = lrt_layer_out_size(l);
    int8_t *x = xmalloc(in), *y = xmalloc(out), *g = xmalloc(out), *dx = xmalloc(in);
    int16_t gexp, dxexp = 0;
    read_exact(stdin, x, in);
    read_exact(stdin, y, out);
    read_exact(stdin, g, out);
    gexp = (int16_t)rd32(stdin);
    if (l->kind == LRT_LAYER_MAXPOOL2D) {
        int rc = lrt_bp_maxpool(l, x, g, dx);
        if (rc != LRT_OK) {
            die("maxpool", rc);
        }
        wrbytes(dx, in);
    } else if (l->kind == LRT_LAYER_BATCHNORM) {
        uint16_t o;
        int rc = lrt_bp_layer_check(l);
        if (rc != LRT_OK) {
            die("layer check", rc);
        }
        wr32((int32_t)lrt_bp_act_mask(l, y, g));
        wrbytes(g, out);
        rc = lrt_bp_batchnorm(l, g, gexp, dx, &dxexp);
        if (rc != LRT_OK) {
            die("batchnorm backward", rc);
        }
        wr32(dxexp);
        wrbytes(dx, in);
        for (o = 0; o < l->out_c; o++) {
            wr64((uint64_t)lrt_bp_bn_gamma_sum(l, x, g, o));
            wr32(lrt_bp_bias_grad(l, g, o));
        }
    } else {
        uint32_t m = lrt_bp_layer_m(l), n = l->out_c, j, nz, oy, ox;
        uint16_t o;
        int32_t *dw = xmalloc(4u * n * m);
        int8_t *patch = xmalloc(m);
        int rc = lrt_bp_layer_check(l);
        if (rc != LRT_OK) {
            die("layer check", rc);
        }
        nz = lrt_bp_act_mask(l, y, g);
        wr32((int32_t)nz);
        wrbytes(g, out);
        rc = lrt_bp_input_grad(l, lrt_layer_weights(&tn->net, l), g, gexp, dx, &dxexp);
        if (rc != LRT_OK) {
            die("input grad", rc);
        }
        wr32(dxexp);
        wrbytes(dx, in);
        {
            /* the one-pass scatter, which must give the same bits */
            uint32_t wsize = lrt_bp_input_grad_work_size(l);
            int32_t *work = xmalloc(wsize);
            memset(dx, 0x5A, in);
            rc = lrt_bp_input_grad_sparse(l, lrt_layer_weights(&tn->net, l), g, gexp, dx,
                                          &dxexp, work, wsize);
            if (rc != LRT_OK) {
                die("sparse input grad", rc);
            }
            free(work);
        }
        wr32(dxexp);
        wrbytes(dx, in);
        lrt_bp_weight_grad(l, x, g, dw);
        {
            /* the LRT trainer's whole-layer kernel (runs of taps, offset term hoisted out of
             * the windows inside the input): the same integers */
            int32_t *dw2 = xmalloc(lrt_conv_wgrad_size(l));
            lrt_conv_wgrad_s32(l, x, g, dw2);
            if (memcmp(dw2, dw, 4u * n * m) != 0) {
                die("lrt_conv_wgrad_s32 != lrt_bp_weight_grad", LRT_ERR_STATE);
            }
            free(dw2);
        }
        for (j = 0; j < n * m; j++) {
            wr32(dw[j]);
        }
        for (o = 0; o < n; o++) {
            for (j = 0; j < m; j++) {
                uint32_t cnt = 0;
                int32_t v = lrt_bp_weight_grad_cell(l, x, g, o, j, &cnt);
                if (v != dw[o * m + j]) {
                    die("cell != whole-layer gradient", LRT_ERR_STATE);
                }
                wr32((int32_t)cnt);
            }
        }
        for (o = 0; o < n; o++) {
            wr32(lrt_bp_bias_grad(l, g, o));
            wr32(lrt_bp_channel_active(l, g, o));
        }
        if (l->kind == LRT_LAYER_CONV2D) {
            for (oy = 0; oy < l->out_h; oy++) {
                for (ox = 0; ox < l->out_w; ox++) {
                    lrt_conv_gather_patch(l, x, (uint16_t)oy, (uint16_t)ox, patch);
                    wrbytes(patch, m);
                }
            }
        }
        free(dw);
        free(patch);
    }
    free(x);
    free(y);
    free(g);
    free(dx);
}

static void mode_softmax(void)
{
    int32_t n = rd32(stdin), zp = rd32(stdin), e = rd32(stdin), label = rd32(stdin), i;
    int8_t *logits = xmalloc((size_t)n), *dz = xmalloc((size_t)n);
    uint16_t *p = xmalloc(2u * (size_t)n);
    int16_t dzexp = 0;
    int rc;
    read_exact(stdin, logits, (size_t)n);
    rc = lrt_bp_softmax_xent(logits, (uint16_t)n, zp, e, (uint16_t)label, dz, &dzexp, p);
    wr32(rc);
    wr32(dzexp);
    wrbytes(dz, (size_t)n);
    for (i = 0; i < n; i++) {
        wr32(p[i]);
    }
    free(logits);
    free(dz);
    free(p);
}

static void mode_maxnorm(void)
{
    int32_t n = rd32(stdin), i;
    uint32_t beta = (uint32_t)rd32(stdin);
    lrt_mnorm s;
    lrt_ufx omb = lrt_ufx_make((1u << 30) - beta, -30);
    lrt_mnorm_init(&s);
    for (i = 0; i < n; i++) {
        int32_t mant = rd32(stdin), e = rd32(stdin);
        lrt_ufx d = lrt_mnorm_update_beta(&s, lrt_ufx_make((uint64_t)(uint32_t)mant, e), omb);
        wr32((int32_t)d.m);
        wr32(d.e);
    }
}

/* RAM weight store: transaction states and bounds. */
static void mode_wstore(void)
{
    int8_t blob[16];
    const int8_t data[4] = {1, 2, 3, 4};
    lrt_wstore ws;
    lrt_wstore_ram ram;
    int fails = 0;
    memset(blob, 0, sizeof(blob));
#define CHECK(expr, want)                                                                      \
    do {                                                                                       \
        int got_ = (expr);                                                                     \
        if (got_ != (want)) {                                                                  \
            fprintf(stderr, "%s = %d, want %d\n", #expr, got_, (int)(want));                 \
            fails++;                                                                           \
        }                                                                                      \
    } while (0)
    CHECK(lrt_wstore_ram_init(NULL, &ram, blob, 16), LRT_ERR_ARG);
    CHECK(lrt_wstore_ram_init(&ws, &ram, blob, 16), LRT_OK);
    CHECK(lrt_wstore_write(&ws, 0, data, 4), LRT_ERR_STATE); /* no transaction */
    CHECK(lrt_wstore_commit(&ws), LRT_ERR_STATE);
    CHECK(lrt_wstore_begin(&ws), LRT_OK);
    CHECK(lrt_wstore_begin(&ws), LRT_ERR_STATE); /* no nesting */
    CHECK(lrt_wstore_write(&ws, 12, data, 4), LRT_OK);
    CHECK(lrt_wstore_write(&ws, 13, data, 4), LRT_ERR_SIZE);
    CHECK(lrt_wstore_write(&ws, 0xFFFFFFF0u, data, 32), LRT_ERR_SIZE); /* no wrap-around */
    CHECK(lrt_wstore_write(&ws, 16, data, 0), LRT_OK);
    CHECK(lrt_wstore_write(&ws, 0, NULL, 4), LRT_ERR_ARG);
    CHECK(lrt_wstore_commit(&ws), LRT_OK);
    CHECK(blob[12] == 1 && blob[15] == 4 && blob[11] == 0, 1);
    CHECK((int)ram.n_commits, 1);
    CHECK((int)ram.n_writes, 2);
    CHECK((int)ram.bytes_written, 4);
    CHECK(lrt_wstore_begin(&ws), LRT_OK);
    CHECK(lrt_wstore_abort(&ws), LRT_OK);
    CHECK(lrt_wstore_begin(&ws), LRT_OK); /* abort closed it */
    CHECK(lrt_wstore_commit(&ws), LRT_OK);
    CHECK(lrt_wstore_begin(NULL), LRT_ERR_ARG);
#undef CHECK
    wr32(fails);
}

/* ---- trainer ---------------------------------------------------------------------------------- */

typedef struct {
    lrt_trainer tr;
    lrt_wstore ws;
    lrt_wstore_ram ram;
    int8_t *act_a, *act_b, *scratch, **keep, *input, *logits;
    lrt_train_layer_state *states;
    uint32_t *cells, *paper;
    int32_t *grad_acc;
    /* lrt hook test state */
    uint32_t flush_every;
    uint32_t terms[256];     /* block hook calls per layer */
    uint32_t mismatch[256];  /* samples whose blocks did not add up to the exact gradient */
    int32_t *lrt_block;
    int32_t *gref;           /* exact weight gradient of the pending layer (lrt_bp_weight_grad) */
    int64_t *gsum;           /* sum of its blocks' left right^T */
    int pending;             /* layer whose blocks are being summed, -1: none */
    int32_t pending_exp;
} rig;

static int grads_hook(void *ctx, lrt_trainer *t, const lrt_train_grad *g)
{
    const lrt_layer *l = g->layer;
    uint32_t m = lrt_bp_layer_m(l), n = l->out_c, j;
    int32_t *dw;
    uint16_t o;
    (void)ctx;
    (void)t;
    if (l->kind == LRT_LAYER_BATCHNORM) {
        /* gamma: sum dy (x 2^16 - mu) and std_q (dgamma = 2^(e+6) sum / std_q); beta: sum dy */
        wr32(g->index);
        wr32(g->dz_exp);
        wr32((int32_t)n);
        for (o = 0; o < n; o++) {
            wr64((uint64_t)lrt_bp_bn_gamma_sum(l, g->x, g->dz, o));
            wr32((int32_t)l->bn->std_q[o]);
            wr32(lrt_bp_bias_grad(l, g->dz, o));
        }
        return LRT_OK;
    }
    dw = xmalloc(4u * n * m);
    lrt_bp_weight_grad(l, g->x, g->dz, dw);
    wr32(g->index);
    wr32(g->dz_exp + g->x_exp); /* weight gradient exponent */
    wr32(g->dz_exp);            /* bias gradient exponent */
    wr32((int32_t)n);
    wr32((int32_t)m);
    for (j = 0; j < n * m; j++) {
        wr32(dw[j]);
    }
    for (o = 0; o < n; o++) {
        wr32(lrt_bp_bias_grad(l, g->dz, o));
    }
    free(dw);
    return LRT_OK;
}

/* Compare the pending layer's block sum with its exact gradient. */
static void check_pending(rig *r, const lrt_net *net)
{
    const lrt_layer *l;
    uint32_t j, nm;
    if (r->pending < 0) {
        return;
    }
    l = &net->layers[r->pending];
    nm = (uint32_t)l->out_c * lrt_bp_layer_m(l);
    for (j = 0; j < nm; j++) {
        if (r->gsum[j] != r->gref[j]) {
            r->mismatch[r->pending]++;
            break;
        }
    }
    r->pending = -1;
}

/* Scheme lrt: the gradient of each trainable weight layer, to check its blocks against. */
static int lrt_grad_hook(void *ctx, lrt_trainer *t, const lrt_train_grad *g)
{
    rig *r = (rig *)ctx;
    const lrt_layer *l = g->layer;
    check_pending(r, t->net);
    if (l->kind == LRT_LAYER_BATCHNORM || g->w == NULL) {
        return LRT_OK;
    }
    lrt_bp_weight_grad(l, g->x, g->dz, r->gref);
    memset(r->gsum, 0, sizeof(int64_t) * l->out_c * lrt_bp_layer_m(l));
    r->pending = g->index;
    r->pending_exp = g->dz_exp + g->x_exp;
    return LRT_OK;
}

static int block_hook(void *ctx, lrt_trainer *t, lrt_train_block *b)
{
    rig *r = (rig *)ctx;
    const lrt_layer *l = &t->net->layers[b->index];
    uint32_t m = lrt_bp_layer_m(l), i, j, c;
    if (b->index != r->pending || b->left_exp + b->right_exp != r->pending_exp || b->k == 0 ||
        b->k > 16 || b->left != r->lrt_block) {
        return LRT_ERR_STATE;
    }
    for (c = 0; c < b->k; c++) {
        const int32_t *lc = b->left + (size_t)c * l->out_c, *rc = b->right + (size_t)c * m;
        for (i = 0; i < l->out_c; i++) {
            for (j = 0; j < m; j++) {
                r->gsum[(size_t)i * m + j] += (int64_t)lc[i] * rc[j];
            }
        }
    }
    /* the accumulator may overwrite the blocks: so may this stand-in */
    memset(b->left, 0x5a, sizeof(int32_t) * b->k * l->out_c);
    r->terms[b->index]++;
    return LRT_OK;
}

/* Stand-in for the LRT flush: every flush_every samples, subtract 1 LSB from row 0 of every
 * trainable layer (exercises begin/row/commit and the accounting). */
static int sample_end_hook(void *ctx, lrt_trainer *t)
{
    rig *r = (rig *)ctx;
    uint8_t i;
    int rc;
    check_pending(r, t->net);
    if (r->flush_every == 0 || t->samples % r->flush_every != 0) {
        return LRT_OK;
    }
    rc = lrt_train_update_begin(t);
    if (rc != LRT_OK) {
        return rc;
    }
    for (i = 0; i < t->net->n_layers; i++) {
        const lrt_layer *l = &t->net->layers[i];
        if ((l->kind == LRT_LAYER_CONV2D || l->kind == LRT_LAYER_DENSE) && l->trainable) {
            uint32_t m = lrt_bp_layer_m(l), j;
            int16_t *delta = xmalloc(2u * m);
            for (j = 0; j < m; j++) {
                delta[j] = 1;
            }
            rc = lrt_train_update_row(t, i, 0, delta);
            free(delta);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return lrt_train_update_commit(t);
}

static void rig_init(rig *r, test_net *tn, const lrt_train_config *cfg, int counters,
                     const lrt_train_hooks *hooks)
{
    lrt_net *net = &tn->net;
    uint32_t a = lrt_train_act_buffer_size(net), cells = lrt_train_cell_count(net);
    lrt_train_buffers b;
    uint8_t i;
    int rc;
    r->act_a = xmalloc(a);
    r->act_b = xmalloc(a);
    r->scratch = xmalloc(lrt_train_scratch_size(net));
    r->keep = xmalloc(sizeof(int8_t *) * net->n_layers);
    for (i = 0; i < net->n_layers; i++) {
        /* only what the trainer says it needs: ASan catches any other use */
        r->keep[i] = lrt_train_keep_needed(net, i) ? xmalloc(lrt_layer_out_size(&net->layers[i]))
                                                  : NULL;
    }
    r->states = xmalloc(sizeof(lrt_train_layer_state) * net->n_layers);
    r->cells = counters ? xmalloc(4u * cells) : NULL;
    r->paper = counters ? xmalloc(4u * cells) : NULL;
    r->input = xmalloc((size_t)net->in_h * net->in_w * net->in_c);
    r->logits = xmalloc(net->n_classes);
    rc = lrt_wstore_ram_init(&r->ws, &r->ram, tn->blob, net->blob_size);
    if (rc != LRT_OK) {
        die("wstore init", rc);
    }
    b.act_a = r->act_a;
    b.act_b = r->act_b;
    b.keep = r->keep;
    b.scratch = r->scratch;
    /* exactly the size the trainer asks for (ASan checks it): the one-pass input gradient */
    b.dx_work_size = lrt_train_dx_work_size(net);
    b.dx_work = xmalloc(b.dx_work_size ? b.dx_work_size : 1u);
    b.layer_state = r->states;
    b.cell_writes = r->cells;
    b.paper_writes = r->paper;
    {
        uint32_t mx = 0;
        for (i = 0; i < net->n_layers; i++) {
            const uint32_t nm = (uint32_t)net->layers[i].out_c * lrt_bp_layer_m(&net->layers[i]);
            mx = nm > mx ? nm : mx;
        }
        r->lrt_block = xmalloc(lrt_train_lrt_block_size(net, cfg->lrt_block));
        r->gref = xmalloc(4u * (mx ? mx : 1u));
        r->gsum = xmalloc(8u * (mx ? mx : 1u));
        r->pending = -1;
    }
    b.lrt_block = r->lrt_block;
    r->grad_acc = cfg->scheme == LRT_SCHEME_SGD_BATCH ? xmalloc(4u * cells) : NULL;
    b.grad_acc = r->grad_acc;
    /* exactly the words the trainer asks for (ASan checks it) */
    b.head = cfg->head_lr_q16 ? xmalloc(4u * lrt_train_head_size(net)) : NULL;
    rc = lrt_train_init(&r->tr, net, cfg, &b, &r->ws, hooks);
    if (rc != LRT_OK) {
        die("train init", rc);
    }
}

static void mode_grads(test_net *tn)
{
    static rig r;
    lrt_train_config cfg;
    lrt_train_hooks hooks;
    int32_t count, s;
    uint32_t in = (uint32_t)tn->net.in_h * tn->net.in_w * tn->net.in_c;
    memset(&cfg, 0, sizeof(cfg));
    memset(&hooks, 0, sizeof(hooks));
    cfg.scheme = LRT_SCHEME_BIAS; /* lr 0: gradients only, nothing changes */
    cfg.bn_stats_frozen = 1;      /* nor do batch-norm statistics */
    hooks.layer_grad = grads_hook;
    rig_init(&r, tn, &cfg, 0, &hooks);
    count = rd32(stdin);
    for (s = 0; s < count; s++) {
        uint16_t pred = 0;
        int32_t label;
        int rc;
        read_exact(stdin, r.input, in);
        label = rd32(stdin);
        rc = lrt_train_infer(&r.tr, r.input, r.logits, &pred);
        if (rc != LRT_OK) {
            die("infer", rc);
        }
        wrbytes(r.logits, tn->net.n_classes);
        wr32(pred);
        rc = lrt_train_learn(&r.tr, (uint16_t)label);
        if (rc != LRT_OK) {
            die("learn", rc);
        }
        wr32(-1);
    }
}

static void mode_train(test_net *tn, int argc, char **argv)
{
    static rig r;
    lrt_train_config cfg;
    lrt_train_hooks hooks;
    int32_t count, s;
    int counters, dump;
    uint32_t in = (uint32_t)tn->net.in_h * tn->net.in_w * tn->net.in_c, cells;
    uint8_t i;
    if (argc < 8) {
        die("train: SCHEME MAXNORM LR_Q16 COUNTERS FLUSH_EVERY", LRT_ERR_ARG);
    }
    memset(&cfg, 0, sizeof(cfg));
    memset(&hooks, 0, sizeof(hooks));
    cfg.scheme = (uint8_t)atoi(argv[3]);
    cfg.max_norm = (uint8_t)atoi(argv[4]);
    cfg.lr_q16 = (uint32_t)strtoul(argv[5], NULL, 10);
    counters = atoi(argv[6]);
    r.flush_every = (uint32_t)atoi(argv[7]);
    cfg.grad_real_units = (uint8_t)(argc > 8 ? atoi(argv[8]) : 0);
    cfg.lrt_block = (uint8_t)(argc > 9 ? atoi(argv[9]) : 0);
    dump = argc > 10 ? atoi(argv[10]) : 0;
    if (argc > 18) {
        cfg.batch_conv = (uint16_t)atoi(argv[11]);
        cfg.batch_dense = (uint16_t)atoi(argv[12]);
        cfg.rho_min_q16 = (uint32_t)strtoul(argv[13], NULL, 10);
        cfg.policy.kind = (uint8_t)atoi(argv[14]);
        cfg.policy.gate_errors = (uint16_t)atoi(argv[15]);
        cfg.policy.gate_cells_q16 = (uint32_t)strtoul(argv[16], NULL, 10);
        cfg.policy.samples_per_commit = (uint32_t)strtoul(argv[17], NULL, 10);
        cfg.policy.burst = (uint32_t)strtoul(argv[18], NULL, 10);
        cfg.policy.gate_rate_q16 = argc > 19 ? (uint32_t)strtoul(argv[19], NULL, 10) : 0u;
        cfg.head_lr_q16 = argc > 20 ? (uint32_t)strtoul(argv[20], NULL, 10) : 0u;
    }
    hooks.block = block_hook;
    hooks.layer_grad = dump ? grads_hook : cfg.scheme == LRT_SCHEME_LRT ? lrt_grad_hook : NULL;
    hooks.sample_end = sample_end_hook;
    hooks.ctx = &r;
    rig_init(&r, tn, &cfg, counters, &hooks);
    count = rd32(stdin);
    for (s = 0; s < count; s++) {
        uint16_t pred = 0;
        int32_t label;
        int rc;
        read_exact(stdin, r.input, in);
        label = rd32(stdin);
        rc = lrt_train_sample(&r.tr, r.input, (uint16_t)label, r.logits, &pred);
        if (rc != LRT_OK) {
            die("train sample", rc);
        }
        if (dump) {
            wr32(-1);
        }
        wrbytes(r.logits, tn->net.n_classes);
        wr32(pred);
    }
    wr32((int32_t)r.tr.samples);
    wr32((int32_t)r.tr.flushes);
    wr32((int32_t)r.ram.n_commits);
    wr32((int32_t)r.ram.n_writes);
    wr32((int32_t)r.ram.bytes_written);
    wr32((int32_t)r.tr.errors);
    for (i = 0; i < tn->net.n_layers; i++) {
        lrt_train_stats st;
        int rc = lrt_train_layer_stats(&r.tr, i, &st);
        if (rc != LRT_OK) {
            die("stats", rc);
        }
        wr32((int32_t)st.max_writes);
        wr64(st.total_writes);
        wr32((int32_t)st.paper_max);
        wr64(st.paper_total);
        wr32((int32_t)st.cells);
        wr32(st.exact);
        wr32((int32_t)r.terms[i]);
        wr32((int32_t)r.mismatch[i]);
    }
    {
        uint8_t payload[8 + 12 * 256];
        size_t len = 0;
        int rc = lrt_train_stats_payload(&r.tr, payload, sizeof(payload), &len);
        if (rc != LRT_OK || lrt_train_stats_payload(&r.tr, payload, len - 1, &len) != LRT_ERR_SIZE) {
            die("stats payload", rc);
        }
        wr32((int32_t)len);
        wrbytes(payload, len);
    }
    wrbytes(tn->blob, tn->net.blob_size);
    for (i = 0; i < tn->net.n_layers; i++) {
        const lrt_layer *l = &tn->layers[i];
        uint16_t o;
        if (l->kind == LRT_LAYER_CONV2D || l->kind == LRT_LAYER_DENSE) {
            for (o = 0; o < l->out_c; o++) {
                wr32(l->bias[o]);
            }
        }
    }
    for (i = 0; i < tn->net.n_layers; i++) {
        const lrt_layer *l = &tn->layers[i];
        if (l->kind == LRT_LAYER_BATCHNORM) { /* only nets with batch norm: format unchanged */
            write_bn(l);
        }
    }
    cells = lrt_train_cell_count(&tn->net);
    wr32((int32_t)cells);
    if (counters) {
        uint32_t k;
        for (k = 0; k < cells; k++) {
            wr32((int32_t)r.cells[k]);
        }
        for (k = 0; k < cells; k++) {
            wr32((int32_t)r.paper[k]);
        }
    }
}

int main(int argc, char **argv)
{
    static test_net tn;
    if (argc < 3) {
        fprintf(stderr, "usage: bp_driver NET MODE [args]\n");
        return 2;
    }
    if (strcmp(argv[2], "softmax") == 0) {
        mode_softmax();
    } else if (strcmp(argv[2], "maxnorm") == 0) {
        mode_maxnorm();
    } else if (strcmp(argv[2], "wstore") == 0) {
        mode_wstore();
    } else {
        load_net(argv[1], &tn);
        if (strcmp(argv[2], "layer") == 0 && argc > 3) {
            mode_layer(&tn, atoi(argv[3]));
        } else if (strcmp(argv[2], "bntables") == 0) {
            mode_bntables(&tn);
        } else if (strcmp(argv[2], "grads") == 0) {
            mode_grads(&tn);
        } else if (strcmp(argv[2], "train") == 0) {
            mode_train(&tn, argc, argv);
        } else {
            die("unknown mode", LRT_ERR_ARG);
        }
    }
    fflush(stdout);
    return 0;
}
