/* lrt_train.c - training schemes over the backward kernels (see lrt_train.h). */
#include "lrt_train.h"

#include <string.h>

#include "lrt_util.h"

/* round(g * a), half away from zero, saturated to int32 */
static int32_t scale_grad(int32_t g, lrt_ufx a)
{
    uint64_t mag, prod;
    int64_t r;
    if (g == 0 || a.m == 0) {
        return 0;
    }
    mag = (uint64_t)(g < 0 ? -(int64_t)g : g);
    prod = mag * a.m; /* < 2^63 */
    if (a.e >= 0) {
        r = INT32_MAX; /* m >= 2^31: any non-zero product overflows int32 */
    } else {
        r = lrt_bp_round_shift((int64_t)prod, (unsigned)LRT_MIN(-(int64_t)a.e, 63));
        r = LRT_MIN(r, (int64_t)INT32_MAX);
    }
    return (int32_t)(g < 0 ? -r : r);
}

/* a / b, 0 when b is 0 (lrt_ufx_div saturates instead) */
static lrt_ufx div_or_zero(lrt_ufx a, lrt_ufx b)
{
    static const lrt_ufx zero = {0u, 0};
    return b.m == 0 ? zero : lrt_ufx_div(a, b);
}

/* ---- sizes -------------------------------------------------------------------------------------
 */

static int has_weights(const lrt_layer *l)
{
    return l->kind == LRT_LAYER_CONV2D || l->kind == LRT_LAYER_DENSE;
}

static int is_trainable(const lrt_layer *l)
{
    return has_weights(l) && l->trainable;
}

uint8_t lrt_train_first_trainable(const lrt_net *net)
{
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        if (is_trainable(&net->layers[i])) {
            return i;
        }
    }
    return net->n_layers;
}

/* LRT_TRAIN_INPUT_READ of layer k, k == n_layers: above the top layer */
static int input_read(const lrt_net *net, uint8_t k)
{
    const uint8_t first = lrt_train_first_trainable(net);
    int read = first < net->n_layers; /* above the top: whether any layer trains */
    uint8_t j;
    for (j = net->n_layers; j > k; j--) {
        const lrt_layer *l = &net->layers[j - 1];
        read = LRT_TRAIN_INPUT_READ(l->kind == LRT_LAYER_FLATTEN, l->kind == LRT_LAYER_BATCHNORM,
                                    j - 1 >= first, read);
    }
    return read;
}

int lrt_train_keep_needed(const lrt_net *net, uint8_t i)
{
    if (i >= net->n_layers) {
        return 0;
    }
    return LRT_TRAIN_KEEP_NEEDED(i + 1 == net->n_layers, net->layers[i].kind == LRT_LAYER_FLATTEN,
                                 input_read(net, (uint8_t)(i + 1)));
}

uint32_t lrt_train_act_buffer_size(const lrt_net *net)
{
    uint32_t n = lrt_net_act_buffer_size(net);
    uint8_t i;
    n = LRT_MAX(n, (uint32_t)net->n_classes);
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        n = LRT_MAX(n, LRT_TRAIN_ACT_OF(lrt_layer_in_size(l), lrt_layer_out_size(l)));
    }
    return n;
}

uint32_t lrt_train_scratch_size(const lrt_net *net)
{
    uint32_t n = 0;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        n = LRT_MAX(n, LRT_TRAIN_SCRATCH_OF(is_trainable(l), lrt_bp_layer_m(l)));
    }
    return n;
}

uint32_t lrt_train_dx_work_size(const lrt_net *net)
{
    const uint8_t first = lrt_train_first_trainable(net);
    uint32_t n = 0;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        n = LRT_MAX(n,
                    LRT_TRAIN_DX_WORK_OF(i > first, lrt_bp_input_grad_work_size(&net->layers[i])));
    }
    return n;
}

uint32_t lrt_train_cell_base(const lrt_net *net, uint8_t i)
{
    uint32_t n = 0;
    uint8_t k;
    for (k = 0; k < i && k < net->n_layers; k++) {
        const lrt_layer *l = &net->layers[k];
        n += LRT_TRAIN_CELLS_OF(is_trainable(l), l->w_size);
    }
    return n;
}

uint32_t lrt_train_head_size(const lrt_net *net)
{
    const lrt_layer *l = &net->layers[net->n_layers - 1];
    if (l->kind != LRT_LAYER_DENSE) {
        return 0;
    }
    return LRT_TRAIN_HEAD_WORDS((uint32_t)l->out_c, lrt_layer_in_size(l));
}

uint32_t lrt_train_cell_count(const lrt_net *net)
{
    return lrt_train_cell_base(net, net->n_layers);
}

static uint8_t block_width(uint8_t kb)
{
    return (uint8_t)LRT_TRAIN_BLOCK_WIDTH(kb);
}

/* The largest per-layer block figure over the trainable weight layers, and at least `least`:
 * words of the block buffer (LRT_TRAIN_LRT_BLOCK_WORDS) or columns of a block step
 * (LRT_TRAIN_LAYER_BLOCK_COLUMNS). */
static uint32_t trainable_block_max(const lrt_net *net, uint8_t kb, int words, uint32_t least)
{
    const uint32_t kw = block_width(kb);
    uint32_t best = least;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        const uint32_t n = l->out_c, m = lrt_bp_layer_m(l);
        const int dense = l->kind == LRT_LAYER_DENSE;
        if (is_trainable(l)) {
            best = LRT_MAX(best, words ? LRT_TRAIN_LRT_BLOCK_WORDS(dense, n, m, kw)
                                       : LRT_TRAIN_LAYER_BLOCK_COLUMNS(dense, n, kw));
        }
    }
    return best;
}

uint32_t lrt_train_lrt_block_size(const lrt_net *net, uint8_t kb)
{
    return 4u * trainable_block_max(net, kb, 1, 0u);
}

uint8_t lrt_train_max_block_columns(const lrt_net *net, uint8_t kb)
{
    return (uint8_t)trainable_block_max(net, kb, 0, 1u);
}

int lrt_train_whole_sample_block(const lrt_layer *l, uint8_t kb)
{
    return LRT_TRAIN_WHOLE_SAMPLE_BLOCK(l->kind == LRT_LAYER_CONV2D, l->out_c, kb);
}

/* ---- init / forward ------------------------------------------------------------------------ */

int lrt_train_init(lrt_trainer *t, lrt_net *net, const lrt_train_config *cfg,
                   const lrt_train_buffers *buf, const lrt_wstore *ws, const lrt_train_hooks *hooks)
{
    uint8_t i;
    uint32_t cells;
    if (t == NULL || net == NULL || cfg == NULL || buf == NULL || net->layers == NULL ||
        net->n_layers == 0 || net->n_classes == 0 || buf->act_a == NULL || buf->act_b == NULL ||
        (buf->keep == NULL && cfg->scheme != LRT_SCHEME_INFERENCE) || buf->layer_state == NULL ||
        cfg->scheme > LRT_SCHEME_SGD_BATCH || cfg->weight_bits == 1 || cfg->weight_bits > 8 ||
        cfg->lrt_block > 16 ||
        (cfg->scheme == LRT_SCHEME_LRT && hooks != NULL && hooks->block != NULL &&
         buf->lrt_block == NULL)) {
        return LRT_ERR_ARG;
    }
    memset(t, 0, sizeof(*t));
    t->net = net;
    t->cfg = *cfg;
    t->buf = *buf;
    t->ws = ws;
    if (hooks != NULL) {
        t->hooks = *hooks;
    }
    t->first = lrt_train_first_trainable(net);
    if (lrt_layer_out_size(&net->layers[net->n_layers - 1]) != net->n_classes) {
        return LRT_ERR_SIZE;
    }
    for (i = 0; i < net->n_layers; i++) {
        lrt_train_layer_state *st = &buf->layer_state[i];
        memset(st, 0, sizeof(*st));
        lrt_mnorm_init(&st->mn_w);
        lrt_mnorm_init(&st->mn_b);
        if (cfg->scheme != LRT_SCHEME_INFERENCE && lrt_train_keep_needed(net, i) &&
            buf->keep[i] == NULL) {
            return LRT_ERR_ARG;
        }
        if (cfg->scheme != LRT_SCHEME_INFERENCE && i >= t->first &&
            lrt_bp_layer_check(&net->layers[i]) != LRT_OK) {
            return LRT_ERR_UNSUPPORTED;
        }
        if (net->layers[i].kind == LRT_LAYER_BATCHNORM && cfg->scheme != LRT_SCHEME_INFERENCE &&
            (net->layers[i].bn == NULL || lrt_net_bn_refresh(&net->layers[i]) != LRT_OK)) {
            return LRT_ERR_ARG;
        }
        if (is_trainable(&net->layers[i]) &&
            (net->layers[i].bias == NULL ||
             net->layers[i].w_size !=
                 (uint32_t)net->layers[i].out_c * lrt_bp_layer_m(&net->layers[i]))) {
            return LRT_ERR_SIZE;
        }
    }
    if (cfg->scheme != LRT_SCHEME_INFERENCE && t->first < net->n_layers) {
        if (lrt_bp_layer_check(&net->layers[net->n_layers - 1]) != LRT_OK) {
            return LRT_ERR_UNSUPPORTED; /* the softmax needs the logits' exponent */
        }
        if ((cfg->scheme == LRT_SCHEME_SGD || cfg->scheme == LRT_SCHEME_LRT ||
             cfg->scheme == LRT_SCHEME_SGD_BATCH) &&
            (ws == NULL || buf->scratch == NULL)) {
            return LRT_ERR_ARG;
        }
        if (cfg->scheme == LRT_SCHEME_SGD_BATCH && buf->grad_acc == NULL) {
            return LRT_ERR_ARG;
        }
    }
    net->head = NULL;
    net->head_bias = NULL;
    if (cfg->head_lr_q16 != 0) {
        /* the residual learns only the classifier, from the gradient its scheme computes */
        const lrt_layer *l = &net->layers[net->n_layers - 1];
        uint32_t words = lrt_train_head_size(net);
        if (cfg->scheme == LRT_SCHEME_INFERENCE || buf->head == NULL || words == 0 ||
            !is_trainable(l)) {
            return LRT_ERR_ARG;
        }
        memset(buf->head, 0, (size_t)words * sizeof(int32_t));
        net->head = buf->head;
        net->head_bias = buf->head + l->w_size;
    }
    cells = lrt_train_cell_count(net);
    if (buf->grad_acc != NULL) {
        memset(buf->grad_acc, 0, (size_t)cells * sizeof(int32_t));
    }
    if (buf->cell_writes != NULL) {
        memset(buf->cell_writes, 0, (size_t)cells * sizeof(uint32_t));
    }
    if (buf->paper_writes != NULL) {
        memset(buf->paper_writes, 0, (size_t)cells * sizeof(uint32_t));
    }
    return LRT_OK;
}

int lrt_train_infer(lrt_trainer *t, const int8_t *input, int8_t *logits, uint16_t *pred)
{
    int rc;
    if (t == NULL || input == NULL || logits == NULL || pred == NULL) {
        return LRT_ERR_ARG;
    }
    t->have_forward = 0;
    rc = lrt_net_forward(t->net, input, logits, t->buf.act_a, t->buf.act_b, t->buf.keep);
    if (rc != LRT_OK) {
        return rc;
    }
    *pred = lrt_argmax_s8(logits, t->net->n_classes);
    t->pred = *pred;
    t->input = input;
    t->have_forward = 1;
    return LRT_OK;
}

/* ---- weight transactions --------------------------------------------------------------------- */

static int ensure_open(lrt_trainer *t)
{
    int rc;
    if (t->open) {
        return LRT_OK;
    }
    rc = lrt_wstore_begin(t->ws);
    if (rc == LRT_OK) {
        t->open = 1;
    }
    return rc;
}

/* A batch-norm layer's state, as little-endian int32 gamma, beta, mean, msq, pow_q30. */
static int write_bn_snapshot(lrt_trainer *t, const lrt_layer *l)
{
    const int32_t *parts[4];
    uint32_t off = l->b_offset;
    uint8_t chunk[32];
    unsigned k;
    parts[0] = l->bn->gamma;
    parts[1] = l->bn->beta;
    parts[2] = l->bn->mean;
    parts[3] = l->bn->msq;
    for (k = 0; k <= 4; k++) {
        uint16_t o = 0, n = k < 4 ? l->out_c : 1;
        while (o < n) {
            uint16_t j, nb = (uint16_t)LRT_MIN(8u, (uint32_t)n - o);
            int rc;
            for (j = 0; j < nb; j++) {
                uint32_t v = k < 4 ? (uint32_t)parts[k][o + j] : *l->bn->pow_q30;
                chunk[4 * j] = (uint8_t)v;
                chunk[4 * j + 1] = (uint8_t)(v >> 8);
                chunk[4 * j + 2] = (uint8_t)(v >> 16);
                chunk[4 * j + 3] = (uint8_t)(v >> 24);
            }
            rc = lrt_wstore_write(t->ws, off, chunk, 4u * nb);
            if (rc != LRT_OK) {
                return rc;
            }
            off += 4u * nb;
            o = (uint16_t)(o + nb);
        }
    }
    return LRT_OK;
}

static int write_bias_snapshot(lrt_trainer *t)
{
    const lrt_net *net = t->net;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        uint16_t o = 0;
        if (l->kind == LRT_LAYER_BATCHNORM && l->bn != NULL) {
            int rc = write_bn_snapshot(t, l);
            if (rc != LRT_OK) {
                return rc;
            }
            continue;
        }
        if (!is_trainable(l)) {
            continue;
        }
        while (o < l->out_c) {
            uint8_t chunk[32]; /* little-endian int32s, whatever the CPU's byte order */
            uint16_t k, nb = (uint16_t)LRT_MIN(8u, (uint32_t)l->out_c - o);
            int rc;
            for (k = 0; k < nb; k++) {
                lrt_put_le32(chunk + 4 * k, (uint32_t)l->bias[o + k]);
            }
            rc = lrt_wstore_write(t->ws, l->b_offset + 4u * o, chunk, 4u * nb);
            if (rc != LRT_OK) {
                return rc;
            }
            o = (uint16_t)(o + nb);
        }
    }
    return LRT_OK;
}

static int fail(lrt_trainer *t, int rc)
{
    if (t->open) {
        (void)lrt_wstore_abort(t->ws);
        t->open = 0;
    }
    return rc;
}

int lrt_train_update_begin(lrt_trainer *t)
{
    if (t == NULL || t->ws == NULL) {
        return LRT_ERR_ARG;
    }
    if (t->open) {
        return LRT_ERR_STATE;
    }
    return ensure_open(t);
}

int lrt_train_update_commit(lrt_trainer *t)
{
    uint8_t i;
    int rc;
    if (t == NULL) {
        return LRT_ERR_ARG;
    }
    if (!t->open) {
        return LRT_ERR_STATE;
    }
    rc = write_bias_snapshot(t);
    if (rc == LRT_OK) {
        rc = lrt_wstore_commit(t->ws);
    }
    if (rc != LRT_OK) {
        return fail(t, rc);
    }
    t->open = 0;
    t->flushes++;
    for (i = 0; i < t->net->n_layers; i++) {
        lrt_train_layer_state *st = &t->buf.layer_state[i];
        st->changed_commits += st->dirty;
        st->dirty = 0;
    }
    return LRT_OK;
}

void lrt_train_head_reset(lrt_trainer *t)
{
    if (t != NULL && t->net != NULL && t->net->head != NULL) {
        memset(t->buf.head, 0, (size_t)lrt_train_head_size(t->net) * sizeof(int32_t));
    }
}

int lrt_train_commit_biases(lrt_trainer *t)
{
    int rc;
    if (t == NULL || t->ws == NULL) {
        return LRT_ERR_ARG;
    }
    if (t->open) {
        return LRT_ERR_STATE;
    }
    rc = ensure_open(t);
    if (rc == LRT_OK) {
        rc = write_bias_snapshot(t);
    }
    if (rc == LRT_OK) {
        rc = lrt_wstore_commit(t->ws);
    }
    if (rc != LRT_OK) {
        return fail(t, rc);
    }
    t->open = 0;
    return LRT_OK;
}

/* Store row `row` of layer li as neww[m]: count a write per changed cell, stage the span
 * from the first to the last changed cell. Opens the transaction on the first change. */
static int apply_row(lrt_trainer *t, uint8_t li, uint16_t row, const int8_t *neww)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_train_layer_state *st = &t->buf.layer_state[li];
    uint32_t m = lrt_bp_layer_m(l), j, first = m, last = 0, changed = 0;
    uint32_t off = l->w_offset + (uint32_t)row * m;
    const int8_t *old = t->net->blob + off;
    uint32_t *cnt = t->buf.cell_writes;
    uint32_t base = cnt ? lrt_train_cell_base(t->net, li) + (uint32_t)row * m : 0;
    int rc;
    for (j = 0; j < m; j++) {
        if (neww[j] == old[j]) {
            continue;
        }
        if (first == m) {
            first = j;
        }
        last = j;
        changed++;
        if (cnt != NULL) {
            uint32_t c = ++cnt[base + j];
            st->max_writes = LRT_MAX(st->max_writes, c);
        }
    }
    if (changed == 0) {
        return 0;
    }
    rc = ensure_open(t);
    if (rc == LRT_OK) {
        rc = lrt_wstore_write(t->ws, off + first, neww + first, last - first + 1);
    }
    if (rc != LRT_OK) {
        return rc;
    }
    st->total_writes += changed;
    st->dirty = 1;
    return (int)LRT_MIN(changed, (uint32_t)INT32_MAX);
}

int32_t lrt_train_weight_step(const lrt_trainer *t)
{
    uint8_t bits = t->cfg.weight_bits;
    return (bits == 0 || bits >= 8) ? 1 : (int32_t)1 << (8 - bits);
}

int lrt_train_weight_lsb_exp(const lrt_trainer *t)
{
    uint8_t bits = t->cfg.weight_bits;
    return (bits == 0 || bits >= 8) ? -7 : 1 - (int)bits;
}

int lrt_train_update_row(lrt_trainer *t, uint8_t layer, uint16_t row, const int16_t *delta)
{
    const lrt_layer *l;
    const int8_t *old;
    uint32_t m, j;
    int32_t step;
    int rc;
    if (t == NULL || delta == NULL || layer >= t->net->n_layers) {
        return LRT_ERR_ARG;
    }
    l = &t->net->layers[layer];
    if (!is_trainable(l) || row >= l->out_c) {
        return LRT_ERR_ARG;
    }
    if (!t->open) {
        return LRT_ERR_STATE;
    }
    m = lrt_bp_layer_m(l);
    step = lrt_train_weight_step(t);
    old = t->net->blob + l->w_offset + (uint32_t)row * m;
    for (j = 0; j < m; j++) {
        int32_t v = (int32_t)old[j] - (int32_t)delta[j] * step;
        t->buf.scratch[j] = (int8_t)LRT_CLAMP(v, -128, 128 - step);
    }
    rc = apply_row(t, layer, row, t->buf.scratch);
    return rc < 0 ? fail(t, rc) : rc;
}

/* ---- schemes -------------------------------------------------------------------------------- */

static lrt_ufx learning_rate(const lrt_trainer *t)
{
    return lrt_ufx_make(t->cfg.lr_q16, -16);
}

/* 1 - beta of the gradient max-norm */
static lrt_ufx one_minus_beta(const lrt_trainer *t)
{
    uint32_t beta = t->cfg.maxnorm_beta_q30;
    if (beta == 0 || beta >= (1u << 30)) {
        beta = LRT_MAXNORM_BETA_Q30_DEFAULT;
    }
    return lrt_ufx_make((1u << 30) - beta, -30);
}

static uint64_t abs64(int64_t v)
{
    return (uint64_t)(v < 0 ? -v : v);
}

#define BIAS_GRAD_CACHE 64 /* channels of bias gradients kept on the stack (256 bytes) */

static void bias_update(lrt_trainer *t, uint8_t li, const int8_t *dz, int16_t dz_exp)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_train_layer_state *st = &t->buf.layer_state[li];
    int acc_exp = (int)l->in_exp + l->weight_exp;
    int bexp = LRT_MAX((int)l->bias_exp, acc_exp);
    int top = (int)l->bias_exp + 15 - acc_exp; /* range limit 2^(bias_exp+15) in acc LSBs */
    int step = bexp - acc_exp;
    int64_t lo, hi;
    lrt_ufx scale = learning_rate(t);
    /* max-norm reads every channel's gradient twice: then they are summed once, in one pass
     * over dz, where they fit the stack (every layer of the mcu preset) */
    int32_t cache[BIAS_GRAD_CACHE];
    const int cached = t->cfg.max_norm && l->out_c <= BIAS_GRAD_CACHE;
    uint16_t o;
    if (cached) {
        lrt_bp_bias_grads(l, dz, cache);
    }
    if (top > 31) {
        lo = INT32_MIN;
        hi = INT32_MAX;
    } else {
        top = LRT_MAX(top, step);
        lo = -((int64_t)1 << top);
        hi = ((int64_t)1 << top) - ((int64_t)1 << step);
        hi = LRT_MAX(hi, lo);
    }
    if (t->cfg.max_norm) {
        uint64_t amax = 0;
        for (o = 0; o < l->out_c; o++) {
            amax = LRT_MAX(amax, abs64(cached ? cache[o] : lrt_bp_bias_grad(l, dz, o)));
        }
        if (amax == 0) {
            return;
        }
        scale = div_or_zero(
            scale, lrt_mnorm_update_beta(&st->mn_b, lrt_ufx_make(amax, dz_exp), one_minus_beta(t)));
    }
    scale = lrt_ufx_ldexp(scale, (int)dz_exp - bexp);
    for (o = 0; o < l->out_c; o++) {
        int32_t gb = cached ? cache[o] : lrt_bp_bias_grad(l, dz, o);
        int64_t du = scale_grad(gb, scale), b;
        if (du == 0) {
            continue;
        }
        if (step >= 31) {
            b = du > 0 ? lo : hi;
        } else {
            b = (int64_t)l->bias[o] - du * ((int64_t)1 << step);
        }
        l->bias[o] = (int32_t)LRT_CLAMP(b, lo, hi);
    }
}

/* ---- streaming batch norm ------------------------------------------------------------------ */

static const int8_t *layer_input(const lrt_trainer *t, uint8_t li);

/* a / b rounded half away from zero, b > 0 */
static int64_t div_round64(int64_t a, int64_t b)
{
    uint64_t mag = a < 0 ? (uint64_t)(-a) : (uint64_t)a;
    uint64_t q = (mag + (uint64_t)b / 2u) / (uint64_t)b;
    return a < 0 ? -(int64_t)q : (int64_t)q;
}

static int32_t clamp_param(int64_t v)
{
    return (int32_t)LRT_CLAMP(v, (int64_t)-32768, (int64_t)32767);
}

/* gamma and beta of a batch-norm layer, one step of lr (per-tensor max-norm optional);
 * both are real-valued parameters with LSB 2^-12. */
static void bn_update(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dy, int16_t dy_exp)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_bn *bn = l->bn;
    lrt_train_layer_state *st = &t->buf.layer_state[li];
    lrt_ufx sb = learning_rate(t), sg = learning_rate(t), gmax = {0u, 0};
    uint64_t bmax = 0;
    uint16_t c;
    int do_beta = 1, do_gamma = 1;
    for (c = 0; c < l->out_c; c++) {
        int64_t tg = lrt_bp_bn_gamma_sum(l, x, dy, c);
        lrt_ufx g = div_or_zero(lrt_ufx_make(abs64(tg), dy_exp + 6), lrt_ufx_make(bn->std_q[c], 0));
        if (lrt_ufx_cmp(g, gmax) > 0) {
            gmax = g;
        }
        bmax = LRT_MAX(bmax, abs64(lrt_bp_bias_grad(l, dy, c)));
    }
    if (t->cfg.max_norm) {
        do_beta = bmax != 0;
        do_gamma = gmax.m != 0;
        if (do_beta) {
            sb = div_or_zero(sb, lrt_mnorm_update_beta(&st->mn_b, lrt_ufx_make(bmax, dy_exp),
                                                       one_minus_beta(t)));
        }
        if (do_gamma) {
            sg = div_or_zero(sg, lrt_mnorm_update_beta(&st->mn_w, gmax, one_minus_beta(t)));
        }
    }
    sb = lrt_ufx_ldexp(sb, (int)dy_exp + 12);
    sg = lrt_ufx_ldexp(sg, 12);
    for (c = 0; c < l->out_c; c++) {
        if (do_beta) {
            int32_t du = scale_grad(lrt_bp_bias_grad(l, dy, c), sb);
            bn->beta[c] = clamp_param((int64_t)bn->beta[c] - du);
        }
        if (do_gamma) {
            int64_t tg = lrt_bp_bn_gamma_sum(l, x, dy, c);
            lrt_ufx g =
                div_or_zero(lrt_ufx_make(abs64(tg), dy_exp + 6), lrt_ufx_make(bn->std_q[c], 0));
            int32_t du = scale_grad(tg < 0 ? -1 : 1, lrt_ufx_mul(g, sg));
            bn->gamma[c] = clamp_param((int64_t)bn->gamma[c] - du);
        }
    }
}

/* Fold this sample's statistics (the kept input of layer li) into the running ones. */
static void bn_stats_update(lrt_trainer *t, uint8_t li)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_bn *bn = l->bn;
    const int8_t *x = layer_input(t, li);
    int64_t b = bn->batch ? bn->batch : 1;
    int64_t p, n_pix = (int64_t)l->out_h * l->out_w;
    uint16_t c;
    for (c = 0; c < l->out_c; c++) {
        int64_t s1 = 0, s2 = 0;
        for (p = 0; p < n_pix; p++) {
            int64_t xi = (int64_t)x[(size_t)p * l->out_c + c] + l->input_offset;
            s1 += xi;
            s2 += xi * xi;
        }
        bn->mean[c] = (int32_t)div_round64(
            (int64_t)bn->mean[c] * (b - 1) + div_round64(s1 * 65536, n_pix), b);
        bn->msq[c] =
            (int32_t)div_round64((int64_t)bn->msq[c] * (b - 1) + div_round64(s2 * 256, n_pix), b);
    }
    *bn->pow_q30 = (uint32_t)(((uint64_t)*bn->pow_q30 * (uint64_t)(b - 1)) / (uint64_t)b);
}

/* Exponent of the gradient lr applies to (paper: wrt W_paper = W_real / alpha, i.e. times
 * alpha) and of the LSB of the trained weight grid the update is quantized to. */
static void sgd_exps(const lrt_trainer *t, const lrt_layer *l, int16_t dz_exp, int *grad_exp,
                     int *lsb_exp)
{
    *grad_exp = (int)dz_exp + l->in_exp;
    *lsb_exp = l->weight_exp + (lrt_train_weight_lsb_exp(t) + 7);
    if (!t->cfg.grad_real_units) {
        *grad_exp += (int)l->weight_exp + 7;
        *lsb_exp = lrt_train_weight_lsb_exp(t);
    }
}

static int sgd_update(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz, int16_t dz_exp)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_train_layer_state *st = &t->buf.layer_state[li];
    uint32_t m = lrt_bp_layer_m(l), j, sample_paper_max = 0;
    uint32_t *paper = t->buf.paper_writes;
    uint32_t base = lrt_train_cell_base(t->net, li);
    int grad_exp, lsb_exp;
    int32_t step = lrt_train_weight_step(t);
    int is_conv = l->kind == LRT_LAYER_CONV2D;
    lrt_ufx scale = learning_rate(t);
    uint16_t o;
    sgd_exps(t, l, dz_exp, &grad_exp, &lsb_exp);
    if (t->cfg.max_norm) {
        /* The divisor needs the whole tensor's max first: one extra pass, no buffer. */
        uint64_t amax = 0;
        for (o = 0; o < l->out_c; o++) {
            if (!lrt_bp_channel_active(l, dz, o)) {
                continue;
            }
            for (j = 0; j < m; j++) {
                amax = LRT_MAX(amax, abs64(lrt_bp_weight_grad_cell(l, x, dz, o, j, NULL)));
            }
        }
        if (amax == 0) {
            return LRT_OK;
        }
        scale = div_or_zero(scale, lrt_mnorm_update_beta(&st->mn_w, lrt_ufx_make(amax, grad_exp),
                                                         one_minus_beta(t)));
    }
    scale = lrt_ufx_ldexp(scale, grad_exp - lsb_exp);
    for (o = 0; o < l->out_c; o++) {
        const int8_t *old;
        int rc;
        if (!lrt_bp_channel_active(l, dz, o)) {
            continue;
        }
        old = t->net->blob + l->w_offset + (uint32_t)o * m;
        for (j = 0; j < m; j++) {
            uint32_t nz = 0, writes;
            int32_t g = lrt_bp_weight_grad_cell(l, x, dz, o, j, &nz);
            int64_t du = scale_grad(g, scale);
            int64_t v = (int64_t)old[j] - du * step;
            t->buf.scratch[j] = (int8_t)LRT_CLAMP(v, -128, 128 - step);
            writes = is_conv ? nz : (du != 0);
            if (writes) {
                st->paper_total += writes;
                sample_paper_max = LRT_MAX(sample_paper_max, writes);
                if (paper != NULL) {
                    uint32_t *c = &paper[base + (uint32_t)o * m + j];
                    *c += writes;
                    st->paper_max = LRT_MAX(st->paper_max, *c);
                }
            }
        }
        rc = apply_row(t, li, o, t->buf.scratch);
        if (rc < 0) {
            return rc;
        }
    }
    st->paper_bound += sample_paper_max;
    return LRT_OK;
}

/* ---- sgd-batch ----------------------------------------------------------------------------- */

#define SGDB_FRAC 16 /* fraction bits of the accumulator, in LSBs of the trained grid */

/* acc += lr * dL/dW of this sample in 2^-frac units of 2^lsb_shift trained-grid LSBs,
 * saturating at [lo, hi]. */
static void add_weight_grad(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz,
                            int16_t dz_exp, lrt_ufx lr, int frac, int lsb_shift, int32_t *acc,
                            int32_t lo, int32_t hi)
{
    const lrt_layer *l = &t->net->layers[li];
    uint32_t m = lrt_bp_layer_m(l), j;
    int grad_exp, lsb_exp;
    lrt_ufx scale;
    uint16_t o;
    sgd_exps(t, l, dz_exp, &grad_exp, &lsb_exp);
    scale = lrt_ufx_ldexp(lr, grad_exp - (lsb_exp + lsb_shift) + frac);
    for (o = 0; o < l->out_c; o++) {
        int32_t *row = acc + (uint32_t)o * m;
        if (!lrt_bp_channel_active(l, dz, o)) {
            continue;
        }
        for (j = 0; j < m; j++) {
            int64_t v =
                (int64_t)row[j] + scale_grad(lrt_bp_weight_grad_cell(l, x, dz, o, j, NULL), scale);
            row[j] = (int32_t)LRT_CLAMP(v, (int64_t)lo, (int64_t)hi);
        }
    }
}

/* acc += lr * dL/dW of this sample, in 2^-SGDB_FRAC weight LSBs (saturating). */
static void sgdb_accumulate(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz,
                            int16_t dz_exp)
{
    add_weight_grad(t, li, x, dz, dz_exp, learning_rate(t), SGDB_FRAC, 0,
                    t->buf.grad_acc + lrt_train_cell_base(t->net, li), INT32_MIN, INT32_MAX);
}

/* the classifier residual: head_lr * dL/dW in 2^-LRT_HEAD_FRAC int8 LSBs, whatever the grid.
 * Not clamped to the int8 range: W - R is never stored, and the largest weight of each row
 * sits at +-127 after quantization, where the stream may want it larger (measured: bounding
 * W - R to int8 lost most of what the residual gains on the control stream). The bound of
 * 1,024 LSBs keeps the classifier's int32 accumulator exact (lrt_train.h). */
static void head_accumulate(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz,
                            int16_t dz_exp)
{
    add_weight_grad(t, li, x, dz, dz_exp, lrt_ufx_make(t->cfg.head_lr_q16, -16), LRT_HEAD_FRAC,
                    -(lrt_train_weight_lsb_exp(t) + 7), t->buf.head, -LRT_TRAIN_HEAD_BOUND,
                    LRT_TRAIN_HEAD_BOUND);
}

/* Scale from accumulator units to weight-grid LSBs: 2^-SGDB_FRAC, divided by the max-norm
 * divisor of the summed gradient when max-norm is on (0 mantissa: nothing to write). */
static lrt_ufx sgdb_scale(lrt_trainer *t, uint8_t li)
{
    const lrt_layer *l = &t->net->layers[li];
    const int32_t *acc = t->buf.grad_acc + lrt_train_cell_base(t->net, li);
    lrt_ufx scale = lrt_ufx_make(1u, -SGDB_FRAC);
    uint64_t amax = 0;
    uint32_t k;
    int grad_exp, lsb_exp;
    if (!t->cfg.max_norm) {
        return scale;
    }
    for (k = 0; k < l->w_size; k++) {
        amax = LRT_MAX(amax, abs64(acc[k]));
    }
    if (amax == 0 || t->cfg.lr_q16 == 0) {
        scale.m = 0;
        return scale;
    }
    /* the summed gradient's max in its own units: amax 2^(lsb - FRAC) / lr */
    sgd_exps(t, l, 0, &grad_exp, &lsb_exp);
    {
        lrt_ufx gmax = lrt_ufx_div(lrt_ufx_make(amax, lsb_exp - SGDB_FRAC), learning_rate(t));
        return div_or_zero(
            scale, lrt_mnorm_update_beta(&t->buf.layer_state[li].mn_w, gmax, one_minus_beta(t)));
    }
}

static uint32_t sgdb_count(lrt_trainer *t, uint8_t li, lrt_ufx scale, uint32_t stop_at)
{
    const lrt_layer *l = &t->net->layers[li];
    const int32_t *acc = t->buf.grad_acc + lrt_train_cell_base(t->net, li);
    uint32_t k, n = 0;
    for (k = 0; k < l->w_size && n < stop_at; k++) {
        n += scale_grad(acc[k], scale) != 0;
    }
    return n;
}

/* Write layer li's summed update (the transaction opens on the first changed row). */
static int sgdb_write(lrt_trainer *t, uint8_t li, lrt_ufx scale)
{
    const lrt_layer *l = &t->net->layers[li];
    uint32_t m = lrt_bp_layer_m(l), j;
    int32_t *acc = t->buf.grad_acc + lrt_train_cell_base(t->net, li);
    int32_t step = lrt_train_weight_step(t);
    uint16_t o;
    for (o = 0; o < l->out_c; o++) {
        const int8_t *old = t->net->blob + l->w_offset + (uint32_t)o * m;
        int32_t *row = acc + (uint32_t)o * m;
        int rc;
        for (j = 0; j < m; j++) {
            int64_t v = (int64_t)old[j] - (int64_t)scale_grad(row[j], scale) * step;
            t->buf.scratch[j] = (int8_t)LRT_CLAMP(v, -128, 128 - step);
        }
        rc = apply_row(t, li, o, t->buf.scratch);
        if (rc < 0) {
            return rc;
        }
    }
    memset(acc, 0, (size_t)l->w_size * sizeof(int32_t));
    lrt_train_mark_written(t, li);
    return LRT_OK;
}

/* Ask the policy about layer li's sum: write it, or keep it and keep summing. `joining`: an
 * open commit (under a write budget) takes the sum of a layer whose pseudo-batch has not
 * ended, once per pseudo-batch (a refusal leaves it to its next end); else its pseudo-batch
 * has just ended and a refusal marks it kept. */
static int sgdb_offer(lrt_trainer *t, uint8_t li, int joining)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_train_layer_state *st = &t->buf.layer_state[li];
    lrt_ufx scale;
    uint32_t need;
    st->kept = (uint8_t)!joining;
    if (!lrt_policy_due(&t->cfg.policy, st->gate_excess_q16, t->flushes, t->samples)) {
        return LRT_OK;
    }
    scale = sgdb_scale(t, li);
    need = lrt_policy_min_cells(&t->cfg.policy, l->w_size, t->cfg.rho_min_q16);
    if (scale.m == 0 || sgdb_count(t, li, scale, need) < need) {
        return LRT_OK;
    }
    return sgdb_write(t, li, scale);
}

/* Every layer whose pseudo-batch is complete: ask the policy, write or keep summing. In blob
 * order, joining layers too, so a commit writes forwards. */
static int sgdb_sample_end(lrt_trainer *t)
{
    const lrt_net *net = t->net;
    const int joins = lrt_policy_joins(&t->cfg.policy);
    uint8_t li;
    int rc;
    for (li = t->first; li < net->n_layers; li++) {
        const lrt_layer *l = &net->layers[li];
        lrt_train_layer_state *st = &t->buf.layer_state[li];
        uint16_t batch = l->kind == LRT_LAYER_CONV2D ? t->cfg.batch_conv : t->cfg.batch_dense;
        if (!is_trainable(l)) {
            continue;
        }
        if (++st->pending < LRT_MAX(batch, 1u)) {
            rc = joins && t->open && st->kept ? sgdb_offer(t, li, 1) : LRT_OK;
        } else {
            st->pending = 0;
            rc = sgdb_offer(t, li, 0);
        }
        if (rc != LRT_OK) {
            return rc;
        }
    }
    return LRT_OK;
}

void lrt_train_mark_written(lrt_trainer *t, uint8_t i)
{
    if (t != NULL && i < t->net->n_layers) {
        t->buf.layer_state[i].gate_excess_q16 = 0;
        t->buf.layer_state[i].kept = 0;
    }
}

/* Scheme lrt: hand layer li's per-sample gradient to the block hook as low-rank blocks
 * (lrt_train_block): dense k = 1, narrow conv one block of the whole sample, wide conv
 * blocks of kb pixels. */
static int lrt_blocks(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz, int16_t dz_exp)
{
    const lrt_layer *l = &t->net->layers[li];
    const uint16_t n = l->out_c;
    const uint32_t m = lrt_bp_layer_m(l);
    const uint8_t kb = block_width(t->cfg.lrt_block);
    int32_t *buf = t->buf.lrt_block;
    lrt_train_block b;
    lrt_bp_geom g;
    uint32_t i;
    uint16_t oy, ox, o, c = 0;
    b.index = li;
    b.left = buf;
    if (l->kind == LRT_LAYER_DENSE) {
        b.k = 1;
        b.right = buf + n;
        for (i = 0; i < n; i++) {
            b.left[i] = dz[i];
        }
        for (i = 0; i < m; i++) {
            b.right[i] = (int32_t)x[i] + l->input_offset;
        }
        b.left_exp = dz_exp;
        b.right_exp = l->in_exp;
        return t->hooks.block(t->hooks.ctx, t, &b);
    }
    if (lrt_train_whole_sample_block(l, t->cfg.lrt_block)) {
        b.k = n;
        b.right = buf + (size_t)n * n;
        for (i = 0; i < (uint32_t)n * n; i++) {
            b.left[i] = (i % (n + 1u)) == 0;
        }
        lrt_conv_wgrad_s32(l, x, dz, b.right);
        b.left_exp = 0;
        b.right_exp = (int16_t)(dz_exp + l->in_exp);
        return t->hooks.block(t->hooks.ctx, t, &b);
    }
    lrt_bp_geom_of(l, &g);
    b.right = buf + (size_t)kb * n;
    b.left_exp = dz_exp;
    b.right_exp = l->in_exp;
    for (oy = 0; oy < g.out_h; oy++) {
        for (ox = 0; ox < g.out_w; ox++) {
            const int8_t *dzp = dz + ((size_t)oy * g.out_w + ox) * n;
            const int last = oy + 1u == g.out_h && ox + 1u == g.out_w;
            for (o = 0; o < n && dzp[o] == 0; o++) {
            }
            if (o < n) {
                int32_t *rc = b.right + (size_t)c * m;
                for (o = 0; o < n; o++) {
                    b.left[(size_t)c * n + o] = dzp[o];
                }
                lrt_conv_gather_patch(l, x, oy, ox, t->buf.scratch);
                for (i = 0; i < m; i++) {
                    rc[i] = (int32_t)t->buf.scratch[i] + l->input_offset;
                }
                c++;
            }
            if (c > 0 && (c == kb || last)) {
                int rc;
                b.k = c;
                c = 0;
                rc = t->hooks.block(t->hooks.ctx, t, &b);
                if (rc != LRT_OK) {
                    return rc;
                }
            }
        }
    }
    return LRT_OK;
}

/* Hand a trainable layer's gradient to the layer_grad hook, if any (w: NULL for batch norm). */
static int report_grad(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz,
                       int16_t dz_exp, const int8_t *w)
{
    const lrt_layer *l = &t->net->layers[li];
    lrt_train_grad g;
    if (t->hooks.layer_grad == NULL) {
        return LRT_OK;
    }
    g.layer = l;
    g.index = li;
    g.x = x;
    g.x_zp = -l->input_offset;
    g.x_exp = l->in_exp;
    g.dz = dz;
    g.dz_exp = dz_exp;
    g.w = w;
    return t->hooks.layer_grad(t->hooks.ctx, t, &g);
}

static int train_layer(lrt_trainer *t, uint8_t li, const int8_t *x, const int8_t *dz,
                       int16_t dz_exp, uint32_t nz)
{
    const lrt_layer *l = &t->net->layers[li];
    int rc = report_grad(t, li, x, dz, dz_exp, lrt_layer_weights(t->net, l));
    if (rc != LRT_OK) {
        return rc;
    }
    if (nz == 0) {
        return LRT_OK; /* zero gradient: nothing to add, nothing to update */
    }
    bias_update(t, li, dz, dz_exp);
    if (t->net->head != NULL && li == t->net->n_layers - 1) {
        head_accumulate(t, li, x, dz, dz_exp);
    }
    if (t->cfg.scheme == LRT_SCHEME_SGD) {
        return sgd_update(t, li, x, dz, dz_exp);
    }
    if (t->cfg.scheme == LRT_SCHEME_SGD_BATCH) {
        sgdb_accumulate(t, li, x, dz, dz_exp);
        return LRT_OK;
    }
    if (t->cfg.scheme == LRT_SCHEME_LRT && t->hooks.block != NULL) {
        return lrt_blocks(t, li, x, dz, dz_exp);
    }
    return LRT_OK;
}

/* Kept input of layer li: the output of the layer below, looking through flatten layers
 * whose keep buffer was not provided (their output is the same bytes). */
static const int8_t *layer_input(const lrt_trainer *t, uint8_t li)
{
    while (li > 0) {
        const int8_t *k = t->buf.keep[li - 1];
        if (k != NULL || t->net->layers[li - 1].kind != LRT_LAYER_FLATTEN) {
            return k;
        }
        li--;
    }
    return t->input;
}

int lrt_train_learn(lrt_trainer *t, uint16_t label)
{
    const lrt_net *net;
    int8_t *gbuf[2];
    int cur = 0, rc;
    int16_t ge, gnext;
    uint8_t li, last;
    if (t == NULL) {
        return LRT_ERR_ARG;
    }
    net = t->net;
    if (label >= net->n_classes) {
        return LRT_ERR_ARG;
    }
    if (!t->have_forward) {
        return LRT_ERR_STATE;
    }
    if (t->cfg.scheme == LRT_SCHEME_INFERENCE) {
        return LRT_OK;
    }
    t->samples++;
    t->errors += t->pred != label;
    for (li = 0; li < net->n_layers; li++) {
        lrt_train_layer_state *st = &t->buf.layer_state[li];
        st->gate_excess_q16 =
            lrt_policy_gate_update(&t->cfg.policy, st->gate_excess_q16, t->pred != label);
    }
    if (t->first < net->n_layers) {
        last = (uint8_t)(net->n_layers - 1);
        gbuf[0] = t->buf.act_a;
        gbuf[1] = t->buf.act_b;
        rc = lrt_bp_softmax_xent(t->buf.keep[last], net->n_classes, net->layers[last].output_offset,
                                 net->layers[last].out_exp, label, gbuf[0], &ge, NULL);
        if (rc != LRT_OK) {
            return rc;
        }
        for (li = last;; li--) {
            const lrt_layer *l = &net->layers[li];
            const int8_t *x = layer_input(t, li);
            if (has_weights(l)) {
                uint32_t nz = lrt_bp_act_mask(l, t->buf.keep[li], gbuf[cur]);
                gnext = ge;
                if (li > t->first) {
                    /* Input gradient first: it must see this sample's weights unchanged. */
                    if (nz && t->buf.dx_work_size >= lrt_bp_input_grad_work_size(l)) {
                        rc = lrt_bp_input_grad_sparse(l, lrt_layer_weights(net, l), gbuf[cur], ge,
                                                      gbuf[1 - cur], &gnext, t->buf.dx_work,
                                                      t->buf.dx_work_size);
                        if (rc != LRT_OK) {
                            return fail(t, rc);
                        }
                    } else if (nz) {
                        rc = lrt_bp_input_grad(l, lrt_layer_weights(net, l), gbuf[cur], ge,
                                               gbuf[1 - cur], &gnext);
                        if (rc != LRT_OK) {
                            return fail(t, rc);
                        }
                    } else {
                        memset(gbuf[1 - cur], 0, lrt_layer_in_size(l));
                    }
                }
                if (l->trainable) {
                    rc = train_layer(t, li, x, gbuf[cur], ge, nz);
                    if (rc != LRT_OK) {
                        return fail(t, rc);
                    }
                }
                cur = 1 - cur;
                ge = gnext;
            } else if (l->kind == LRT_LAYER_BATCHNORM) {
                /* visited only above the lowest trainable weight layer (the walk stops there) */
                uint32_t nz = lrt_bp_act_mask(l, t->buf.keep[li], gbuf[cur]);
                gnext = ge;
                if (l->trainable) {
                    rc = report_grad(t, li, x, gbuf[cur], ge, NULL);
                    if (rc != LRT_OK) {
                        return fail(t, rc);
                    }
                }
                if (nz) {
                    if (l->trainable) {
                        bn_update(t, li, x, gbuf[cur], ge);
                    }
                    rc = lrt_bp_batchnorm(l, gbuf[cur], ge, gbuf[1 - cur], &gnext);
                    if (rc != LRT_OK) {
                        return fail(t, rc);
                    }
                } else {
                    memset(gbuf[1 - cur], 0, lrt_layer_in_size(l));
                }
                cur = 1 - cur;
                ge = gnext;
            } else if (l->kind == LRT_LAYER_MAXPOOL2D && li > t->first) {
                rc = lrt_bp_maxpool(l, x, gbuf[cur], gbuf[1 - cur]);
                if (rc != LRT_OK) {
                    return fail(t, rc);
                }
                cur = 1 - cur;
            }
            /* flatten: NHWC order is the dense input order, the gradient is unchanged */
            if (li == t->first) {
                break;
            }
        }
    }
    /* streaming batch norm: the next sample sees this one's statistics */
    for (li = 0; li < net->n_layers; li++) {
        const lrt_layer *l = &net->layers[li];
        if (l->kind != LRT_LAYER_BATCHNORM) {
            continue;
        }
        if (!t->cfg.bn_stats_frozen) {
            bn_stats_update(t, li);
        }
        rc = lrt_net_bn_refresh(l);
        if (rc != LRT_OK) {
            return fail(t, rc);
        }
    }
    if (t->cfg.scheme == LRT_SCHEME_SGD_BATCH) {
        rc = sgdb_sample_end(t);
        if (rc != LRT_OK) {
            return fail(t, rc);
        }
    }
    if (t->first < net->n_layers) {
        if (t->open) {
            rc = lrt_train_update_commit(t);
            if (rc != LRT_OK) {
                return rc;
            }
        } else if (t->cfg.bias_commit_period && t->ws != NULL &&
                   t->samples % t->cfg.bias_commit_period == 0) {
            rc = lrt_train_commit_biases(t);
            if (rc != LRT_OK) {
                return rc;
            }
        }
    }
    if (t->cfg.scheme == LRT_SCHEME_LRT && t->hooks.sample_end != NULL) {
        return t->hooks.sample_end(t->hooks.ctx, t);
    }
    return LRT_OK;
}

int lrt_train_sample(lrt_trainer *t, const int8_t *input, uint16_t label, int8_t *logits_out,
                     uint16_t *pred)
{
    int rc = lrt_train_infer(t, input, logits_out, pred);
    if (rc != LRT_OK) {
        return rc;
    }
    return lrt_train_learn(t, label);
}

int lrt_train_layer_stats(const lrt_trainer *t, uint8_t i, lrt_train_stats *out)
{
    const lrt_layer *l;
    const lrt_train_layer_state *st;
    if (t == NULL || out == NULL || i >= t->net->n_layers) {
        return LRT_ERR_ARG;
    }
    memset(out, 0, sizeof(*out));
    l = &t->net->layers[i];
    st = &t->buf.layer_state[i];
    if (!has_weights(l)) {
        return LRT_OK;
    }
    out->cells = l->w_size;
    out->total_writes = st->total_writes;
    out->paper_total = st->paper_total;
    if (t->buf.cell_writes != NULL) {
        out->max_writes = st->max_writes;
    } else {
        out->max_writes = st->changed_commits;
    }
    if (t->buf.paper_writes != NULL) {
        out->paper_max = st->paper_max;
    } else {
        out->paper_max = st->paper_bound;
    }
    out->exact = t->buf.cell_writes != NULL &&
                 (t->cfg.scheme != LRT_SCHEME_SGD || t->buf.paper_writes != NULL);
    return LRT_OK;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    lrt_put_le32(p, v);
    return p + 4;
}

int lrt_train_stats_payload(const lrt_trainer *t, uint8_t *out, size_t cap, size_t *len)
{
    size_t need = 8;
    uint8_t i, *p = out;
    if (t == NULL || out == NULL || len == NULL) {
        return LRT_ERR_ARG;
    }
    for (i = 0; i < t->net->n_layers; i++) {
        need += has_weights(&t->net->layers[i]) ? 12u : 0u;
    }
    if (cap < need) {
        return LRT_ERR_SIZE;
    }
    p = put_u32(p, t->samples);
    p = put_u32(p, t->flushes);
    for (i = 0; i < t->net->n_layers; i++) {
        lrt_train_stats st;
        if (!has_weights(&t->net->layers[i])) {
            continue;
        }
        (void)lrt_train_layer_stats(t, i, &st);
        p = put_u32(p, st.max_writes);
        p = put_u32(p, (uint32_t)LRT_MIN(st.total_writes, (uint64_t)UINT32_MAX));
        p = put_u32(p, st.paper_max);
    }
    *len = need;
    return LRT_OK;
}
