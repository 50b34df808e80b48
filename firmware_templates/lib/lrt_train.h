/* lrt_train.h - on-device training: the paper's online protocol over an lrt_net.
 *
 * One call per labelled sample (lrt_train_sample): forward pass keeping every activation,
 * prediction, then learning from the label with the scheme chosen at build time:
 *
 *   LRT_SCHEME_INFERENCE  no training.
 *   LRT_SCHEME_BIAS       biases of trainable layers updated every sample (RAM working copy);
 *                         weights frozen, so no weight write ever happens.
 *   LRT_SCHEME_SGD        biases as above, and every weight of every trainable layer updated
 *                         every sample: W <- clip(W - lr * dL/dW) rounded to the weight LSB,
 *                         one weight-store transaction per sample. Updates below half an LSB
 *                         vanish (the paper's point). The per-sample gradient of a cell is
 *                         summed over output pixels cell by cell: no n x m buffer.
 *   LRT_SCHEME_LRT        biases as above; weight gradients go to the LRT accumulator through
 *                         the hooks (lrt_train_hooks), which flushes through
 *                         lrt_train_update_begin/row/commit.
 *   LRT_SCHEME_SGD_BATCH  biases as above; mini-batch SGD with the exact gradient sum: every
 *                         sample adds lr * dL/dW (same convention and lr as sgd) to a
 *                         full-size int32 accumulator per trainable layer (buffers.grad_acc,
 *                         in 2^-16 LSBs of the trained weight grid, so the only rounding is
 *                         2^-17 LSB per sample and cell), and a layer whose pseudo-batch of
 *                         batch_conv / batch_dense samples is complete is written under the
 *                         write policy (lrt_policy.h) like an LRT flush: W <- clip(W - round(
 *                         sum)), with max-norm the per-tensor max-norm of the sum. The
 *                         baseline that shows what the rank-r state saves: 4 n m bytes per
 *                         layer instead of 2 (r + 1) (n + m).
 *
 * Classifier residual (cfg.head_lr_q16 > 0, any scheme that trains, the last layer dense and
 * trainable): besides what its scheme does with it, the classifier's weight gradient is
 * added every sample at its own rate head_lr (same convention as lr) to an exact int32
 * residual in RAM (buffers.head, 2^-LRT_HEAD_FRAC int8 LSBs), and the forward pass computes
 * the classifier with W - residual (lrt_net.head): it learns per sample at a precision the
 * int8 cells cannot hold, and writes nothing to NVM. Each residual cell saturates at
 * +-2^(LRT_HEAD_FRAC + 10), 1,024 LSBs (the effective weights may leave the int8 range, and
 * the classifier's int32 accumulator cannot overflow for any m < 2^11); the backward pass
 * below the classifier uses the stored W. It is RAM state like the LRT accumulators: a reset
 * starts it at zero again, and so does a push.
 *
 * Weight gradient convention (matters for lr): by default the paper's. Its weights are
 * 8 bit in [-1, 1) and the layer multiplies by alpha = 2^(weight_exp + 7), so the gradient it
 * scales by lr is dL/dW_paper = alpha * dL/dW_real, and the update is quantized to 2^-7:
 * delta[LSB] = round(lr * alpha^2 * dL/dW_real / 2^weight_exp). With grad_real_units = 1 the
 * update is lr * dL/dW_real instead (alpha^-2 times larger). Biases are added after alpha,
 * so both conventions agree on them.
 *
 * Learning rate lr is Q16 (0.01 -> 655). Optional per-tensor gradient max-norm
 * (docs/ALGORITHM.md: beta 0.999, eps 1e-4) on each layer's weight gradient and bias
 * gradient: update = lr * g / max(max|g| + eps, x_hat), x_hat the bias-corrected running
 * average of max|g| + eps. Real-valued quantities that span many octaves (gradient maxima,
 * the running average, the resulting step) are kept in lrt_fixmath's unsigned pseudo-float
 * (lrt_ufx); no float or double is used.
 *
 * Biases: int32 at the accumulator scale 2^(in_exp + weight_exp) (TFLite), restricted to the
 * paper's 16-bit format: LSB 2^max(bias_exp, in_exp + weight_exp), range
 * [-2^(bias_exp+15), 2^(bias_exp+15)) = [-8, 8) for bias_exp = -12. Updates are rounded
 * (half away from zero) to that LSB and clamped to that range.
 *
 * Streaming batch norm (lrt_net.h): every scheme that trains updates, after each sample's
 * backward pass, the running statistics of every batch-norm layer with that sample's
 * statistics (unless cfg.bn_stats_frozen) and refreshes its forward tables. So the
 * prediction and the gradients of a sample come from the state before it, which is what the
 * TFLite export of that state computes; the paper folds the sample in first. The affine
 * parameters gamma/beta of batch-norm layers above the lowest trainable weight layer train
 * every sample like biases (same lr, same max-norm rule, per tensor), in RAM, snapshotted
 * into the blob with the biases (the state snapshot includes the statistics).
 *
 * Backward pass: see lrt_backprop.h (int8 block-float gradients, clipped STE). Layers with
 * trainable == 0 get no weight or bias update; backprop stops at the lowest trainable layer.
 * A sample whose masked gradient is all zero at some layer costs nothing below it.
 *
 * Write accounting (docs/ALGORITHM.md "Counting writes"), per trainable weight layer:
 *   max_writes_per_cell  a cell counts one write each time its stored value changes
 *                        (SGD: once per sample at most; LRT: once per flush at most).
 *   paper_sgd_writes     scheme sgd only: per cell, conv: one write per output pixel whose
 *                        output gradient and input activation are both non-zero ("as if the
 *                        update were applied at each pixel"); dense: one per non-zero
 *                        quantized update. The reported figure is the max over cells.
 * Exact per-cell maxima need a uint32 counter per weight cell (buffers.cell_writes /
 * paper_writes, lrt_train_cell_count() entries each), which emulator builds provide. A real
 * board keeps its wear counters in NVM (lrt_nvm) instead and passes NULL here; the trainer
 * then reports upper bounds: max writes <= number of transactions that changed some cell of
 * the layer, paper max <= sum over samples of the per-sample maximum.
 *
 * Memory (all caller-provided, sizes known at generation time):
 *   act_a, act_b   lrt_train_act_buffer_size(net) bytes each: the forward ping-pong buffers,
 *                  reused as the two gradient ping-pong buffers after the forward pass.
 *   keep[i]        lrt_layer_out_size(&layers[i]) bytes for every i >= first trainable - 1
 *                  except flatten layers, and for the input of every batch-norm layer
 *                  (lrt_train_keep_needed), NULL elsewhere; the last layer's keep holds the
 *                  logits. Inference scheme: keep may be NULL.
 *   scratch        lrt_train_scratch_size(net) bytes (one weight row / one patch).
 *   lrt_block      scheme lrt: lrt_train_lrt_block_size(net, cfg.lrt_block) bytes, int32.
 *   dx_work        optional, lrt_train_dx_work_size(net) bytes, 4-byte aligned: the input
 *                  gradients then take one sparse pass (lrt_bp_input_grad_sparse) instead
 *                  of two; same bits either way.
 *   layer_state    n_layers entries of lrt_train_layer_state.
 *   cell_writes, paper_writes   optional, lrt_train_cell_count(net) uint32 each.
 *   grad_acc       sgd-batch only: lrt_train_cell_count(net) int32.
 *   head           cfg.head_lr_q16 > 0 only: lrt_train_head_size(net) int32 (the residual,
 *                  then the per-sample bias copy of lrt_net.head_bias).
 * The softmax needs no scratch (exponentials are recomputed, n_classes is small).
 * The input sample must stay valid and unchanged until learning is done, and must not alias
 * act_a/act_b.
 */
#ifndef LRT_TRAIN_H
#define LRT_TRAIN_H

#include "lrt_backprop.h"
#include "lrt_fixmath.h"
#include "lrt_net.h"
#include "lrt_policy.h"
#include "lrt_wstore.h"

typedef enum {
    LRT_SCHEME_INFERENCE = 0,
    LRT_SCHEME_BIAS = 1,
    LRT_SCHEME_SGD = 2,
    LRT_SCHEME_LRT = 3,
    LRT_SCHEME_SGD_BATCH = 4,
} lrt_scheme;

/* ---- gradient max-norm (per tensor): lrt_mnorm of lrt_fixmath.h ------------------------ */
#define LRT_MAXNORM_BETA_Q30_DEFAULT 1072668082u /* 0.999 * 2^30 */

/* ---- trainer -------------------------------------------------------------------------- */
typedef struct {
    uint8_t scheme;              /* lrt_scheme */
    uint8_t max_norm;            /* 1: per-tensor gradient max-norm on weight/bias gradients */
    uint32_t lr_q16;             /* learning rate, Q16 */
    uint32_t maxnorm_beta_q30;   /* 0: LRT_MAXNORM_BETA_Q30_DEFAULT */
    uint32_t bias_commit_period; /* bias/lrt schemes: snapshot the biases into the blob every
                                    this many samples (0: only with weight commits) */
    uint8_t grad_real_units;     /* 0: paper convention (see above); 1: dL/dW_real */
    uint8_t bn_stats_frozen;     /* 1: batch-norm running statistics stay as they are */
    uint8_t weight_bits;         /* 2..8 (0 means 8; 1, > 8: LRT_ERR_ARG): trained weights
                                    stay on a grid of 2^(8 - bits) int8 LSBs (the paper's
                                    bit-width ablation) */
    uint8_t lrt_block;           /* LRT: largest block width kb, 1..16 (0 means 16) */
    /* sgd-batch: pseudo-batch per layer kind (0 means 1) and rho_min (Q16) of the fixed
     * policy; every batched scheme: the write policy (the LRT flush reads it too) */
    uint16_t batch_conv, batch_dense;
    uint32_t rho_min_q16;
    lrt_policy policy;
    uint32_t head_lr_q16; /* classifier residual's rate, Q16 (0: none; see above) */
} lrt_train_config;

/* Per-layer bookkeeping (one per net layer; only weight layers use it). */
typedef struct {
    uint64_t total_writes;    /* sum over cells of stored-value changes */
    uint64_t paper_total;     /* sum over cells of paper-accounting writes (sgd) */
    uint32_t max_writes;      /* max over cells (exact with per-cell counters) */
    uint32_t paper_max;       /* max over cells (exact with per-cell counters) */
    uint32_t changed_commits; /* transactions that changed a cell of this layer */
    uint32_t paper_bound;     /* sum over samples of the per-sample max paper count */
    lrt_mnorm mn_w, mn_b;     /* max-norm state of the weight and bias gradients */
    uint32_t gate_excess_q16; /* policy: error excess since this layer's last write, Q16 */
    uint16_t pending;         /* sgd-batch: samples since the last policy check */
    uint8_t dirty;            /* changed in the open transaction */
    uint8_t kept;             /* a complete pseudo-batch the policy kept: waiting to be written */
} lrt_train_layer_state;

typedef struct {
    uint32_t max_writes;   /* max_writes_per_cell */
    uint64_t total_writes; /* sum over cells (mean = total_writes / cells) */
    uint32_t paper_max;    /* paper_sgd_writes (0 unless scheme sgd) */
    uint64_t paper_total;
    uint32_t cells;
    uint8_t exact; /* 1: maxima from per-cell counters; 0: upper bounds */
} lrt_train_stats;

/* What a scheme sees of one trainable weight layer after its backward step. */
typedef struct {
    const lrt_layer *layer;
    uint8_t index;   /* in net->layers */
    const int8_t *x; /* layer input, real = (x - x_zp) * 2^x_exp */
    int32_t x_zp;
    int16_t x_exp;
    const int8_t *dz; /* masked pre-activation gradient [out_h*out_w*out_c] */
    int16_t dz_exp;   /* real = dz * 2^dz_exp */
    const int8_t *w;  /* the weights before this sample's update (NULL: batch norm) */
} lrt_train_grad;

/* One low-rank block of a weight layer's per-sample gradient (LRT): left right^T, left
 * n x k and right m x k int32 column-major (column c at left + c * n), real = left *
 * 2^left_exp and right * 2^right_exp, in real units (dL/dW_real). For the paper's convention
 * (what the SGD scheme uses by default) scale by alpha: add weight_exp + 7 to left_exp, and
 * flush with weight LSB 2^-7. The buffers are the trainer's lrt_block buffer; the hook may
 * overwrite them. What a sample's gradient becomes:
 *   dense                 k = 1: left = dz, right = x - zp (its gradient has rank 1);
 *   conv, out_c <= kb     k = out_c: left = I, right = G^T, G = sum_p dz_p (patch_p - zp)^T
 *                         (lrt_conv_wgrad_s32): the whole sample in one block;
 *   conv, out_c > kb      blocks of up to kb pixels with a non-zero dz: left = their dz,
 *                         right = their patches (- zp);
 * with kb = cfg.lrt_block. */
typedef struct {
    uint8_t index; /* layer in net->layers */
    uint16_t k;
    int32_t *left;
    int16_t left_exp;
    int32_t *right;
    int16_t right_exp;
} lrt_train_block;

struct lrt_trainer;

/* Integration points for the LRT accumulator (all optional; return LRT_OK or an lrt_err,
 * which aborts the sample and is returned by lrt_train_sample). */
typedef struct {
    /* Every scheme that trains: each trainable weight layer, once per sample, and each
     * trainable batch-norm layer the backward pass visits (then w is NULL and dz is the
     * masked output gradient; gradients: lrt_backprop.h). */
    int (*layer_grad)(void *ctx, struct lrt_trainer *t, const lrt_train_grad *g);
    /* Scheme lrt: the blocks of every trainable weight layer's per-sample gradient (see
     * lrt_train_block), for layers whose gradient is not all zero. */
    int (*block)(void *ctx, struct lrt_trainer *t, lrt_train_block *b);
    /* Scheme lrt: after each sample's backward pass; the place to flush every B samples
     * through lrt_train_update_begin / _row / _commit. */
    int (*sample_end)(void *ctx, struct lrt_trainer *t);
    void *ctx;
} lrt_train_hooks;

typedef struct {
    int8_t *act_a, *act_b;
    int8_t *const *keep;
    int8_t *scratch;
    void *dx_work; /* optional */
    uint32_t dx_work_size;
    lrt_train_layer_state *layer_state;
    uint32_t *cell_writes;  /* optional */
    uint32_t *paper_writes; /* optional */
    int32_t *lrt_block;     /* scheme lrt with a block hook: lrt_train_lrt_block_size() bytes */
    int32_t *grad_acc;      /* sgd-batch: lrt_train_cell_count() entries */
    int32_t *head;          /* cfg.head_lr_q16 > 0: lrt_train_head_size() entries */
} lrt_train_buffers;

typedef struct lrt_trainer {
    lrt_net *net;
    lrt_train_config cfg;
    lrt_train_buffers buf;
    const lrt_wstore *ws;
    lrt_train_hooks hooks;
    const int8_t *input;  /* input of the last forward pass */
    uint32_t samples;     /* samples learned from */
    uint32_t flushes;     /* weight transactions committed */
    uint32_t errors;      /* samples learned from whose prediction was wrong */
    uint16_t pred;        /* prediction of the last forward pass */
    uint8_t first;        /* lowest trainable layer (n_layers if none) */
    uint8_t open;         /* a weight transaction is open */
    uint8_t have_forward; /* keep[] holds the activations of `input` */
} lrt_trainer;

/* Sizes for codegen / static allocation. */
uint32_t lrt_train_act_buffer_size(const lrt_net *net);
uint32_t lrt_train_scratch_size(const lrt_net *net);
uint32_t lrt_train_dx_work_size(const lrt_net *net);
uint32_t lrt_train_cell_count(const lrt_net *net);
/* int32 entries of buffers.head: n m + n for a dense last layer of n outputs and m inputs
 * (LRT_TRAIN_HEAD_WORDS, the same as a constant expression), 0 for any other last layer. */
uint32_t lrt_train_head_size(const lrt_net *net);
#define LRT_TRAIN_HEAD_WORDS(n, m) ((n) * (m) + (n))
/* saturation of a residual cell: 1,024 int8 LSBs in 2^-LRT_HEAD_FRAC units */
#define LRT_TRAIN_HEAD_BOUND ((int32_t)1 << (LRT_HEAD_FRAC + 10))
/* Bytes of the LRT block buffer for block width kb (0 means 16): the largest over trainable
 * weight layers of 4 LRT_TRAIN_LRT_BLOCK_WORDS. */
uint32_t lrt_train_lrt_block_size(const lrt_net *net, uint8_t kb);
/* Block width of cfg.lrt_block (0 means 16). */
#define LRT_TRAIN_BLOCK_WIDTH(kb) ((kb) == 0 ? 16u : (kb))
/* Columns of one block step on a weight layer (n outputs) for block width kb: 1 (dense:
 * dz a^T), n (conv, n <= kb: the whole per-sample gradient against I_n), kb (conv: kb pixels).
 * The largest over the trainable layers sizes the accumulators' shared work buffer. */
#define LRT_TRAIN_LAYER_BLOCK_COLUMNS(dense, n, kb) ((dense) ? 1u : (n) <= (kb) ? (n) : (kb))
/* Largest LRT_TRAIN_LAYER_BLOCK_COLUMNS over the trainable weight layers (1 if none). */
uint8_t lrt_train_max_block_columns(const lrt_net *net, uint8_t kb);
/* int32 words one weight layer (n outputs, m inputs per output) needs of the block buffer
 * for block width kb (LRT_TRAIN_BLOCK_WIDTH): a block of LRT_TRAIN_LAYER_BLOCK_COLUMNS
 * columns on each side, n + m words per column. A constant expression, for static buffers. */
#define LRT_TRAIN_LRT_BLOCK_WORDS(dense, n, m, kb)                                                 \
    (LRT_TRAIN_LAYER_BLOCK_COLUMNS(dense, n, kb) * ((n) + (m)))
/* 1 if scheme lrt hands layer l's gradient to the block hook as one whole-sample block with
 * left = I_n (a conv layer with n <= kb outputs, block width kb as cfg.lrt_block): such a
 * layer's pseudo-batch can be summed exactly (lrt_lowrank_sum). The macro is the same rule
 * as a constant expression, for static buffers. */
#define LRT_TRAIN_WHOLE_SAMPLE_BLOCK(conv, n, kb) ((conv) && (n) <= LRT_TRAIN_BLOCK_WIDTH(kb))
int lrt_train_whole_sample_block(const lrt_layer *l, uint8_t kb);
/* Lowest layer with trainable weights, n_layers if none. */
uint8_t lrt_train_first_trainable(const lrt_net *net);
/* 1 if keep[i] must be provided. */
int lrt_train_keep_needed(const lrt_net *net, uint8_t i);

/* The rules of the helpers above, once, as constant expressions: the helpers apply them to
 * the layer table, and main.c (generated) evaluates them in the preprocessor over each
 * layer's facts to declare and size its static buffers (it checks both agree at boot).
 * Facts of a layer: flatten, bn (its kind is LRT_LAYER_FLATTEN / _BATCHNORM), trainable
 * (it has weights and trains), reached (it or a layer below it trains: the backward pass
 * visits it), reached_below (the layer below it is reached, 0 for the bottom layer).
 *
 * LRT_TRAIN_INPUT_READ: 1 if the backward pass reads the layer's input; a flatten passes
 * the question on to the layer above (read_above; above the top layer: whether any layer
 * trains), a batch norm updates its statistics from its input. */
#define LRT_TRAIN_REACHED(reached_below, trainable) ((reached_below) || (trainable))
#define LRT_TRAIN_INPUT_READ(flatten, bn, reached, read_above)                                     \
    ((flatten) ? (read_above) : ((bn) || (reached)))
/* lrt_train_keep_needed: the top layer's output (the logits feed the softmax gradient) and
 * every output the layer above reads, but a flatten's (the same bytes as its input) */
#define LRT_TRAIN_KEEP_NEEDED(top, flatten, read_above) ((top) || (!(flatten) && (read_above)))
/* What one layer adds to lrt_train_act_buffer_size (max, at least n_classes),
 * lrt_train_scratch_size (max), lrt_train_cell_count (sum) and lrt_train_dx_work_size (max;
 * only the layers above the lowest trainable one back-propagate into their input). */
#define LRT_TRAIN_ACT_OF(in_size, out_size) LRT_MAX((in_size), (out_size))
#define LRT_TRAIN_SCRATCH_OF(trainable, m) ((trainable) ? (m) : 0u)
#define LRT_TRAIN_CELLS_OF(trainable, w_size) ((trainable) ? (w_size) : 0u)
#define LRT_TRAIN_DX_WORK_OF(reached_below, work) ((reached_below) ? (work) : 0u)
/* Index of layer i's first cell in cell_writes / paper_writes (trainable layers only, in
 * layer order, row-major [out_c][m]). */
uint32_t lrt_train_cell_base(const lrt_net *net, uint8_t i);

/* Checks the net (power-of-two formats, int32-safe sizes) and the buffers; zeroes the
 * statistics and counters. hooks may be NULL. The store may be NULL for the inference and
 * bias schemes (then bias snapshots are never written). */
int lrt_train_init(lrt_trainer *t, lrt_net *net, const lrt_train_config *cfg,
                   const lrt_train_buffers *buf, const lrt_wstore *ws,
                   const lrt_train_hooks *hooks);

/* Forward pass keeping activations; logits[n_classes]; *pred = argmax (lowest on ties). */
int lrt_train_infer(lrt_trainer *t, const int8_t *input, int8_t *logits, uint16_t *pred);
/* Learn `label` from the last lrt_train_infer (same input buffer, still unchanged). */
int lrt_train_learn(lrt_trainer *t, uint16_t label);
/* The online protocol: infer (logits and pred are from before the update), then learn. */
int lrt_train_sample(lrt_trainer *t, const int8_t *input, uint16_t label, int8_t *logits_out,
                     uint16_t *pred);

/* Zero the classifier residual (nothing without one): what it learned was relative to weights
 * that a push has just replaced. */
void lrt_train_head_reset(lrt_trainer *t);

/* Weight transaction used by SGD internally and by the LRT flush. update_row applies
 * W[row][j] <- clip(W[row][j] - delta[j] * step, -128, 128 - step) to a trainable layer, with
 * delta in LSBs of the trained weight grid, step = lrt_train_weight_step() int8 LSBs (1 for
 * 8-bit weights); it counts a write for each cell whose value changes and stages the changed
 * span.
 * Returns the number of changed cells or a negative lrt_err. update_commit also writes the
 * bias snapshot of every trainable layer. */
int lrt_train_update_begin(lrt_trainer *t);
/* int8 LSBs per LSB of the trained weight grid, and that LSB's exponent in the paper
 * convention (weights in [-1, 1)): 1 and -7 for 8-bit weights. */
int32_t lrt_train_weight_step(const lrt_trainer *t);
int lrt_train_weight_lsb_exp(const lrt_trainer *t);
int lrt_train_update_row(lrt_trainer *t, uint8_t layer, uint16_t row, const int16_t *delta);
int lrt_train_update_commit(lrt_trainer *t);
/* Persist the RAM biases (one transaction with the bias snapshot only). */
int lrt_train_commit_biases(lrt_trainer *t);

/* Mark layer i as written now (the write policy counts errors from here). */
void lrt_train_mark_written(lrt_trainer *t, uint8_t i);

/* Write statistics of layer i (zeros for layers without weights or frozen layers). */
int lrt_train_layer_stats(const lrt_trainer *t, uint8_t i, lrt_train_stats *out);

/* The STATS reply payload of docs/PROTOCOL.md into out[cap]: u32 samples, u32 flushes, then
 * for every weight layer (conv2d/dense, layer order, frozen ones too): u32 max writes per
 * cell, u32 total writes (saturated), u32 paper-accounting max writes (0 unless sgd); all
 * little-endian. LRT_ERR_SIZE if cap is too small. */
int lrt_train_stats_payload(const lrt_trainer *t, uint8_t *out, size_t cap, size_t *len);

#endif /* LRT_TRAIN_H */
