/* lrt_device.c - protocol handlers over the trainer, the LRT accumulators and the store. */
#include "lrt_device.h"

#include <string.h>

/* ---- LRT hooks -------------------------------------------------------------------------- */

/* Exponent of the left factor's scale: the paper's convention accumulates alpha * G,
 * alpha = 2^(weight_exp + 7) */
static int alpha_exp(const lrt_layer *l)
{
    return l->weight_exp + 7;
}

static int hook_block(void *ctx, lrt_trainer *t, lrt_train_block *b)
{
    lrt_device *dev = (lrt_device *)ctx;
    lrt_lowrank *acc = dev->s.acc[b->index];
    const lrt_layer *l = &t->net->layers[b->index];
    int r;
    if (acc == NULL) {
        return LRT_OK;
    }
    if (dev->s.conv_sum != NULL && dev->s.conv_sum[b->index] != NULL) {
        lrt_lowrank_sum *sum = dev->s.conv_sum[b->index];
        if (b->k != sum->n) {
            return LRT_ERR_ARG;
        }
        lrt_lowrank_sum_add(sum, b->right, b->right_exp);
        return LRT_OK; /* one block step at the end of the pseudo-batch (hook_sample_end) */
    }
    r = lrt_lowrank_step_block(acc, b->left, b->left_exp + alpha_exp(l), b->right, b->right_exp,
                               b->k);
    return r < 0 ? r : LRT_OK;
}

static uint16_t batch_of(const lrt_device *dev, const lrt_layer *l)
{
    return l->kind == LRT_LAYER_CONV2D ? dev->s.batch_conv : dev->s.batch_dense;
}

/* The endurance budget (NVM only): may this flush program the NVM? */
static int budget_allows(lrt_device *dev, const lrt_trainer *t)
{
    lrt_nvm_throttle th;
    if (dev->s.nvm == NULL || dev->s.budget.endurance == 0) {
        return 1;
    }
    if (lrt_nvm_flush_allowed(dev->s.nvm, &dev->s.budget, t->samples, dev->rho_min_q16, &th) < 0) {
        return 1;
    }
    return th.allow;
}

/* The write policy's cell gate on the accumulator's plan: 1 write, 0 deferred. The fixed
 * policy is the accumulator's own rho_min check. */
static int flush_gate(const lrt_trainer *t, const lrt_layer *l, lrt_lowrank *acc,
                      lrt_lowrank_plan *plan, int defer)
{
    uint32_t need;
    int r = lrt_lowrank_flush_prepare(acc, lrt_train_weight_lsb_exp(t), plan);
    if (r < 0) {
        return r;
    }
    /* the policy's cell gate; under the fixed policy it is rho_min, as plan->min_nonzero */
    need = lrt_policy_min_cells(&t->cfg.policy, l->w_size, acc->cfg.rho_min_q16);
    if (lrt_lowrank_count_nonzero(acc, plan, need) >= need) {
        return 1;
    }
    if (defer) {
        lrt_lowrank_defer(acc);
    }
    return 0;
}

static int flush_layer(lrt_device *dev, lrt_trainer *t, uint8_t i, lrt_lowrank *acc, int defer)
{
    const lrt_layer *l = &t->net->layers[i];
    lrt_lowrank_plan plan;
    uint16_t row;
    int r;
    acc->cfg.b_cap = (uint16_t)lrt_policy_step_samples(
        &t->cfg.policy, t->buf.layer_state[i].gate_excess_q16, batch_of(dev, l));
    r = flush_gate(t, l, acc, &plan, defer);
    if (r <= 0) {
        return r; /* below the cell gate: deferred, keep accumulating */
    }
    if (!t->open) {
        r = lrt_train_update_begin(t);
        if (r < 0) {
            return r;
        }
    }
    for (row = 0; row < l->out_c; row++) {
        lrt_lowrank_delta_row(acc, &plan, row, dev->s.delta_row);
        r = lrt_train_update_row(t, i, row, dev->s.delta_row);
        if (r < 0) {
            return r;
        }
    }
    lrt_lowrank_reset(acc);
    lrt_train_mark_written(t, i);
    return 1;
}

/* Ask the budget and the policy about layer i's accumulator: 1 written, 0 kept, or a negative
 * lrt_err. At the end of its pseudo-batch (`joining` 0) a refusal defers the accumulator and
 * marks it kept. `joining`: an open commit under a write budget takes the kept accumulator of a
 * layer whose pseudo-batch has not ended, once per pseudo-batch (a refusal leaves it to its
 * next end) and without deferring it again. `committing`: this sample's commit is open under a
 * write budget, whose NVM throttle allowed it before it opened (asked again inside the open
 * transaction it would count that transaction's programs against this layer). */
static int offer_layer(lrt_device *dev, lrt_trainer *t, uint8_t i, lrt_lowrank *acc, int joining,
                       int committing)
{
    lrt_train_layer_state *st = &t->buf.layer_state[i];
    st->kept = (uint8_t)!joining;
    if (!committing && !budget_allows(dev, t)) {
        dev->throttled++;
        lrt_lowrank_defer(acc);
        return 0;
    }
    if (!lrt_policy_due(&t->cfg.policy, st->gate_excess_q16, t->flushes, t->samples)) {
        if (!joining) {
            lrt_lowrank_defer(acc);
        }
        return 0;
    }
    return flush_layer(dev, t, i, acc, !joining);
}

static int hook_sample_end(void *ctx, lrt_trainer *t)
{
    lrt_device *dev = (lrt_device *)ctx;
    const int joins = lrt_policy_joins(&t->cfg.policy);
    uint8_t i;
    int r, wrote = 0;
    /* layer by layer in blob order, joining layers too, so a commit writes forwards (a flash
     * window below a page refuses a backward write; other stores would program a unit twice) */
    for (i = 0; i < t->net->n_layers; i++) {
        lrt_lowrank *acc = dev->s.acc[i];
        const int summed = dev->s.conv_sum != NULL && dev->s.conv_sum[i] != NULL;
        if (acc == NULL) {
            continue;
        }
        lrt_lowrank_end_sample(acc);
        if (++dev->s.acc_samples[i] < batch_of(dev, &t->net->layers[i])) {
            /* a narrow conv's samples since its pseudo-batch began are in its sum, not yet in
             * the accumulator: it writes at its pseudo-batch's end only */
            if (joins && t->open && !summed && t->buf.layer_state[i].kept) {
                r = offer_layer(dev, t, i, acc, 1, 1);
                if (r < 0) {
                    return r;
                }
                wrote |= r;
            }
            continue;
        }
        dev->s.acc_samples[i] = 0;
        if (summed) {
            r = lrt_lowrank_sum_step(dev->s.conv_sum[i], acc, alpha_exp(&t->net->layers[i]),
                                     t->buf.lrt_block, dev->s.lrt_block_size / 4u);
            if (r < 0) {
                return r;
            }
        }
        r = offer_layer(dev, t, i, acc, 0, joins && t->open);
        if (r < 0) {
            return r;
        }
        wrote |= r;
    }
    /* one transaction for every layer that flushed at this sample */
    return wrote ? lrt_train_update_commit(t) : LRT_OK;
}

/* ---- protocol handlers ------------------------------------------------------------------ */

static int h_hello(void *ctx, lrt_app_info *info)
{
    lrt_device *dev = (lrt_device *)ctx;
    const lrt_net *net = dev->s.net;
    uint8_t i, n = 0;
    for (i = 0; i < net->n_layers; i++) {
        n = (uint8_t)(n + (net->layers[i].kind == LRT_LAYER_CONV2D ||
                           net->layers[i].kind == LRT_LAYER_DENSE));
    }
    info->scheme = dev->s.train.scheme;
    info->flags = dev->s.max_norm ? LRT_PROTO_FLAG_MAX_NORM : 0;
    info->n_layers = n;
    info->n_classes = (uint8_t)net->n_classes;
    info->in_h = net->in_h;
    info->in_w = net->in_w;
    info->in_c = net->in_c;
    memcpy(info->fingerprint, dev->s.fingerprint, 4);
    info->samples = dev->trainer.samples;
    info->store = dev->s.store_state;
    info->generation = dev->s.nvm != NULL ? lrt_nvm_generation(dev->s.nvm) : 0u;
    return LRT_OK;
}

static int h_infer(void *ctx, const int8_t *input, int8_t *logits, uint8_t *pred)
{
    lrt_device *dev = (lrt_device *)ctx;
    uint16_t p = 0;
    int r = lrt_train_infer(&dev->trainer, input, logits, &p);
    *pred = (uint8_t)p;
    return r;
}

static int h_train(void *ctx, const int8_t *input, uint8_t label, int8_t *logits, uint8_t *pred)
{
    lrt_device *dev = (lrt_device *)ctx;
    uint16_t p = 0;
    int r;
    if (dev->pushing) {
        return LRT_ERR_STATE; /* the pushed set replaces what this sample would teach */
    }
    r = lrt_train_sample(&dev->trainer, input, label, logits, &p);
    *pred = (uint8_t)p;
    return r;
}

static int h_stats(void *ctx, uint8_t *out, size_t cap, size_t *len)
{
    lrt_device *dev = (lrt_device *)ctx;
    return lrt_train_stats_payload(&dev->trainer, out, cap, len);
}

static int h_wear(void *ctx, uint8_t *out, size_t cap, size_t *len)
{
    lrt_device *dev = (lrt_device *)ctx;
    const lrt_net *net = dev->s.net;
    const lrt_nvm *nvm = dev->s.nvm;
    uint32_t words[3] = {0u, 0u, 0u};
    size_t need = LRT_PROTO_WEAR_HEAD_SIZE;
    uint8_t i, *p = out;
    int r;
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        need += (l->kind == LRT_LAYER_CONV2D || l->kind == LRT_LAYER_DENSE) ? 4u : 0u;
    }
    if (cap < need) {
        return LRT_ERR_SIZE;
    }
    if (nvm != NULL) {
        lrt_nvm_wear w;
        r = lrt_nvm_wear_summary(nvm, &w);
        if (r < 0) {
            return r;
        }
        words[0] = nvm->cfg->tech;
        words[1] = w.max_blob;
        words[2] = w.max_meta;
    }
    for (i = 0; i < 3; i++) {
        lrt_put_le32(p, words[i]);
        p += 4;
    }
    for (i = 0; i < net->n_layers; i++) {
        const lrt_layer *l = &net->layers[i];
        uint32_t mx = 0;
        if (l->kind != LRT_LAYER_CONV2D && l->kind != LRT_LAYER_DENSE) {
            continue;
        }
        if (nvm != NULL) {
            r = lrt_nvm_wear_range(nvm, l->w_offset, l->w_size, &mx);
            if (r < 0) {
                return r;
            }
        }
        lrt_put_le32(p, mx);
        p += 4;
    }
    *len = need;
    return LRT_OK;
}

static int h_read_blob(void *ctx, uint32_t offset, uint16_t length, uint8_t *out, size_t *len)
{
    lrt_device *dev = (lrt_device *)ctx;
    const lrt_net *net = dev->s.net;
    uint32_t n;
    if (offset > net->blob_size) {
        return LRT_ERR_ARG;
    }
    n = LRT_MIN((uint32_t)length, net->blob_size - offset);
    if (n > 0) {
        memcpy(out, net->blob + offset, n);
    }
    *len = n;
    return LRT_OK;
}

/* Weights only: biases live in RAM (high-endurance memory in the paper) and do not drift. */
static uint32_t weights_end(const lrt_net *net)
{
    uint32_t end = 0;
    uint8_t i;
    for (i = 0; i < net->n_layers; i++) {
        end = LRT_MAX(end, net->layers[i].w_offset + net->layers[i].w_size);
    }
    return end;
}

static int h_drift(void *ctx, uint8_t kind, uint32_t seed, int32_t param)
{
    lrt_device *dev = (lrt_device *)ctx;
    uint32_t end = weights_end(dev->s.net), rng = seed ? seed : 1u;
    int32_t r;
    if (dev->s.nvm == NULL && dev->s.ram_blob == NULL) {
        return LRT_ERR_UNSUPPORTED; /* weights in read-only firmware image */
    }
    if (dev->pushing) {
        return LRT_ERR_STATE;
    }
    if (dev->s.nvm != NULL) {
        if (dev->s.nvm_region == NULL) {
            return LRT_ERR_UNSUPPORTED;
        }
        r = lrt_nvm_drift_apply(dev->s.nvm, dev->s.nvm_region, 0, end, kind, (uint32_t)param, seed);
        return r < 0 ? (int)r : LRT_OK;
    }
    if (kind == LRT_NVM_DRIFT_ANALOG) {
        (void)lrt_nvm_drift_noise(dev->s.ram_blob, end, (uint32_t)param, &rng);
    } else {
        (void)lrt_nvm_drift_bits((uint8_t *)dev->s.ram_blob, end, (uint32_t)param, &rng);
    }
    return LRT_OK;
}

/* Drop an open push: the store forgets the staged set (its programs stay counted). */
static void push_abort(lrt_device *dev)
{
    if (dev->pushing) {
        (void)lrt_wstore_abort(&dev->ws); /* STATE when the store already dropped it */
        dev->pushing = 0;
    }
}

/* Push (a fleet shares what one device learned): a whole new weight set arrives in chunks
 * and is committed atomically, like a training flush. Its WRITEs must come in increasing
 * offset order, so a push programs each NVM unit at most once, as a flush does; any refused
 * WRITE ends the push (the host starts again from its first chunk). */
static int h_write_blob(void *ctx, uint32_t offset, const uint8_t *data, size_t len)
{
    lrt_device *dev = (lrt_device *)ctx;
    int r = LRT_OK;
    if (dev->ws.begin == NULL) {
        return LRT_ERR_UNSUPPORTED; /* weights in the read-only firmware image */
    }
    if (offset > dev->s.net->blob_size || len > dev->s.net->blob_size - offset ||
        (dev->pushing && offset < dev->push_next)) {
        r = LRT_ERR_ARG;
    } else if (!dev->pushing) {
        r = lrt_wstore_begin(&dev->ws);
        if (r < 0) {
            return r;
        }
        dev->pushing = 1;
    }
    if (r == LRT_OK) {
        r = lrt_wstore_write(&dev->ws, offset, data, (uint32_t)len);
    }
    if (r < 0) {
        push_abort(dev);
        return r;
    }
    dev->push_next = offset + (uint32_t)len;
    return LRT_OK;
}

static int h_commit_blob(void *ctx, uint32_t *generation)
{
    lrt_device *dev = (lrt_device *)ctx;
    const lrt_net *net = dev->s.net;
    int r;
    if (!dev->pushing) {
        return LRT_ERR_STATE;
    }
    dev->pushing = 0;
    dev->push_next = 0;
    r = lrt_wstore_commit(&dev->ws);
    if (r < 0) {
        return r;
    }
    /* the classifier residual was learned against the weights just replaced; the RAM working
     * copies (biases, batch-norm state) follow the pushed snapshot, which supersedes what was
     * learned before: a session's end has nothing of it left to commit */
    lrt_train_head_reset(&dev->trainer);
    r = lrt_net_load_state(net);
    if (r < 0) {
        return r;
    }
    dev->bye_samples = dev->trainer.samples;
    *generation = dev->s.nvm != NULL ? lrt_nvm_generation(dev->s.nvm) : 0u;
    return LRT_OK;
}

static int h_bye(void *ctx)
{
    lrt_device *dev = (lrt_device *)ctx;
    /* a push the host never committed is abandoned; then persist the biases learned since
     * the last weight commit, within the wear budget */
    uint32_t learned_since = dev->bye_samples;
    push_abort(dev);
    /* A board on a serial line sees many sessions: one that learned nothing rewrites nothing,
     * and a refused commit is not retried by sessions that only read (a worn store must stay
     * readable); its biases stay in RAM and go with the next session that learns. */
    dev->bye_samples = dev->trainer.samples;
    if (dev->s.train.scheme != LRT_SCHEME_INFERENCE && dev->trainer.samples > learned_since &&
        dev->ws.begin != NULL && budget_allows(dev, &dev->trainer)) {
        return lrt_train_commit_biases(&dev->trainer);
    }
    return LRT_OK;
}

/* ---- init ------------------------------------------------------------------------------- */

int lrt_device_init(lrt_device *dev, const lrt_device_setup *setup)
{
    const lrt_net *net;
    uint8_t i;
    int r;
    if (dev == NULL || setup == NULL || setup->net == NULL) {
        return LRT_ERR_ARG;
    }
    memset(dev, 0, sizeof *dev);
    dev->s = *setup;
    net = setup->net;
    if (setup->act_size < lrt_train_act_buffer_size(net) ||
        setup->scratch_size < lrt_train_scratch_size(net) ||
        (setup->buf.cell_writes != NULL && setup->cell_count < lrt_train_cell_count(net))) {
        return LRT_ERR_SIZE;
    }
    for (i = 0; i < net->n_layers; i++) {
        if (setup->train.scheme != LRT_SCHEME_INFERENCE && lrt_train_keep_needed(net, i) &&
            setup->buf.keep[i] == NULL) {
            return LRT_ERR_SIZE;
        }
    }
    if (setup->nvm != NULL) {
        r = lrt_nvm_wstore(&dev->ws, setup->nvm);
    } else if (setup->ram_blob != NULL) {
        r = lrt_wstore_ram_init(&dev->ws, &dev->ram, setup->ram_blob, net->blob_size);
    } else if (setup->train.scheme == LRT_SCHEME_INFERENCE) {
        r = LRT_OK; /* weights in the firmware image, never written */
    } else {
        r = LRT_ERR_ARG;
    }
    if (r < 0) {
        return r;
    }
    dev->hooks.ctx = dev;
    if (setup->train.scheme == LRT_SCHEME_LRT) {
        if (setup->buf.lrt_block == NULL ||
            setup->lrt_block_size < lrt_train_lrt_block_size(net, setup->train.lrt_block)) {
            return LRT_ERR_SIZE;
        }
        dev->hooks.block = hook_block;
        dev->hooks.sample_end = hook_sample_end;
        for (i = 0; i < net->n_layers; i++) {
            const lrt_layer *l = &net->layers[i];
            const lrt_lowrank_sum *sum = setup->conv_sum != NULL ? setup->conv_sum[i] : NULL;
            if (setup->acc[i] != NULL && setup->delta_row_len < (uint32_t)lrt_layer_in_size(l) &&
                l->kind == LRT_LAYER_DENSE) {
                return LRT_ERR_SIZE;
            }
            /* a sum stands for whole-sample blocks of its layer's size only */
            if (sum != NULL &&
                (setup->acc[i] == NULL ||
                 !lrt_train_whole_sample_block(l, setup->train.lrt_block) || sum->n != l->out_c ||
                 sum->len != (uint32_t)l->out_c * lrt_bp_layer_m(l))) {
                return LRT_ERR_ARG;
            }
        }
    }
    dev->rho_min_q16 = 0;
    r = lrt_train_init(&dev->trainer, setup->net, &setup->train, &setup->buf,
                       dev->ws.begin != NULL ? &dev->ws : NULL, &dev->hooks);
    if (r < 0) {
        return r;
    }
    dev->handlers.hello = h_hello;
    dev->handlers.infer = h_infer;
    dev->handlers.train = h_train;
    dev->handlers.stats = h_stats;
    dev->handlers.wear = h_wear;
    dev->handlers.read_blob = h_read_blob;
    dev->handlers.drift = h_drift;
    dev->handlers.write_blob = h_write_blob;
    dev->handlers.commit_blob = h_commit_blob;
    dev->handlers.bye = h_bye;
    dev->handlers.ctx = dev;
    return LRT_OK;
}

const lrt_app_handlers *lrt_device_handlers(lrt_device *dev)
{
    return &dev->handlers;
}
