/* lrt_policy.h - when a trained layer's pending update is worth an NVM write.
 *
 * Every scheme that batches its weight updates (lrt, lrt-maxnorm, sgd-batch) asks the same
 * questions of the same policy each time a layer's pseudo-batch of B samples is complete:
 *
 *   1. lrt_policy_due(): cheap gates, before the update is even computed;
 *   2. lrt_policy_min_cells(): how many cells the update must change to be written.
 *
 * A layer that fails either keeps accumulating (the next check adds B more samples), so a
 * deferred update is never lost, only made larger. Policies:
 *
 *   LRT_POLICY_FIXED  the paper's schedule: write every B samples when at least rho_min of
 *                     the layer's cells change (rho_min of the LRT accumulator). No gate.
 *   LRT_POLICY_GATED  write only when it pays:
 *                     - error gate: at least gate_errors of the samples seen since the
 *                       layer's last write were mispredicted (a device that has nothing to
 *                       learn writes nothing; the pseudo-batch grows while it does well);
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

typedef struct {
    uint8_t kind;                /* lrt_policy_kind */
    uint16_t gate_errors;        /* gated: mispredicted samples since the layer's last write */
    uint32_t gate_cells_q16;     /* gated: share of the layer's cells, Q16 (0: rho_min) */
    uint32_t samples_per_commit; /* gated: write budget (0: none) */
    uint32_t burst;              /* gated: commits allowed ahead of the budget's schedule */
} lrt_policy;

/* 1 if a layer whose pseudo-batch is complete may compute and try its update, 0 to defer:
 * errors_since = mispredictions since its last write, commits = weight transactions so far
 * (the one this sample may already have opened not included), samples = samples learned. */
int lrt_policy_due(const lrt_policy *p, uint32_t errors_since, uint32_t commits, uint32_t samples);

/* Cells of a layer of `cells` cells the update must change to be written (>= 1). */
uint32_t lrt_policy_min_cells(const lrt_policy *p, uint32_t cells, uint32_t rho_min_q16);

#endif /* LRT_POLICY_H */
