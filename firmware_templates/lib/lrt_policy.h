/* lrt_policy.h - when a trained layer's pending update is worth an NVM write.
 *
 * Every scheme that batches its weight updates (lrt, lrt-maxnorm, sgd-batch) asks the same
 * questions of the same policy each time a layer's pseudo-batch of B samples is complete:
 *
 *   1. lrt_policy_due(): cheap gates, before the update is even computed;
 *   2. lrt_policy_min_cells(): how many cells the update must change to be written;
 *   3. lrt_policy_step_samples() (LRT): how far the write may step.
 *
 * A layer that fails 1 or 2 keeps accumulating (the next check adds B more samples), so a
 * deferred update is never lost; its sum grows, its step only as far as 3 allows. Policies:
 *
 *   LRT_POLICY_FIXED  the paper's schedule: write every B samples when at least rho_min of
 *                     the layer's cells change (rho_min of the LRT accumulator). No gate.
 *   LRT_POLICY_GATED  write only when it pays:
 *                     - error gate: the layer's excess of mispredictions since its last
 *                       write reaches gate_errors. The excess is Page's CUSUM statistic
 *                       S = max(0, S + [mispredicted] - gate_rate), updated every sample
 *                       (lrt_policy_gate_update) and reset by a write: gate_rate is the
 *                       error rate of a device with nothing to learn (e.g. the model's
 *                       held-out error plus a margin), so a stream at that rate keeps S near
 *                       zero and writes almost nothing, while a drift that raises the error
 *                       rate opens the gate within a few samples. gate_rate 0 makes S the
 *                       plain count of mispredictions since the last write;
 *                     - cell gate: the update changes at least gate_cells of the layer's
 *                       cells (0: rho_min);
 *                     - write budget: weight commits <= burst + samples / samples_per_commit
 *                       (0: no budget). A commit programs every NVM cell at most once, into
 *                       one of the store's slots (round robin), so n_slots * endurance /
 *                       samples_per_commit samples bound the lifetime from below.
 *
 * Integer only; the Python twin is toolchain/lrt/policy.py (tested against this file).
 */
#ifndef LRT_POLICY_H
#define LRT_POLICY_H

#include "lrt_common.h"

typedef enum {
    LRT_POLICY_FIXED = 0,
    LRT_POLICY_GATED = 1,
} lrt_policy_kind;

/* the samples an LRT write counts in its step lr * B_eff^p (lrt_policy_step_samples) */
typedef enum {
    LRT_STEP_ALL = 0,      /* every sample since the layer's last write (the paper) */
    LRT_STEP_BATCH = 1,    /* at most one pseudo-batch */
    LRT_STEP_EVIDENCE = 2, /* gated: at most one pseudo-batch per surplus error of the gate */
} lrt_policy_step_bound;

typedef struct {
    uint8_t kind;                /* lrt_policy_kind */
    uint8_t step_bound;          /* lrt_policy_step_bound: how far an LRT write may step */
    uint16_t gate_errors;        /* gated: excess mispredictions that open the gate */
    uint32_t gate_rate_q16;      /* gated: expected mispredictions per sample, Q16 (<= 1.0) */
    uint32_t gate_cells_q16;     /* gated: share of the layer's cells, Q16 (0: rho_min) */
    uint32_t samples_per_commit; /* gated: write budget (0: none) */
    uint32_t burst;              /* gated: commits allowed ahead of the budget's schedule */
} lrt_policy;

/* The layer's error excess after one more sample (Q16, saturating; 0 after a write). */
uint32_t lrt_policy_gate_update(const lrt_policy *p, uint32_t excess_q16, int mispredicted);

/* 1 if a layer whose pseudo-batch is complete may compute and try its update, 0 to defer:
 * excess_q16 = its error excess (lrt_policy_gate_update), commits = weight transactions so
 * far (the one this sample may already have opened not included), samples = samples learned. */
int lrt_policy_due(const lrt_policy *p, uint32_t excess_q16, uint32_t commits, uint32_t samples);

/* 1 if a commit carries every layer whose complete pseudo-batch the policy kept, not only the
 * layers whose pseudo-batch ends at the commit's sample: under a write budget (commits are
 * rare), else the layer with the shortest pseudo-batch would take every commit the budget
 * allows and layers with longer ones (the dense layers) would hardly ever be written. */
int lrt_policy_joins(const lrt_policy *p);

/* Cells of a layer of `cells` cells the update must change to be written (>= 1). */
uint32_t lrt_policy_min_cells(const lrt_policy *p, uint32_t cells, uint32_t rho_min_q16);

/* The most samples an LRT write of a layer with pseudo-batch `batch` may count in its step
 * (lrt_lowrank_config.b_cap; 0: no bound): LRT_STEP_BATCH one pseudo-batch; LRT_STEP_EVIDENCE
 * (gated policy) one pseudo-batch per whole surplus error of the layer's excess, at least one,
 * so a gate opened by a few random errors writes a small step and a drift that piles up errors
 * the full one. At most 65,535. */
uint32_t lrt_policy_step_samples(const lrt_policy *p, uint32_t excess_q16, uint32_t batch);

#endif /* LRT_POLICY_H */
