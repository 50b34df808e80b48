/* lrt_device.h - the firmware as a whole: request server + trainer + LRT + weight store.
 *
 * Glue only. main.c (generated) declares every buffer statically, fills an lrt_device_setup
 * and calls lrt_device_init + lrt_app_serve; this file wires the protocol handlers to the
 * trainer (lrt_train), the LRT accumulators (lrt_lowrank: one per trainable weight layer,
 * fed through the trainer's block hook: one block step per sample (or per block of pixels),
 * or, for a layer with a conv_sum, the exact sum of its pseudo-batch in one step when the
 * pseudo-batch ends; flushed every B samples) and the weight store (RAM, or
 * lrt_nvm when the weights live in NVM).
 *
 * LRT gradient convention: the paper's (lrt_train.h): the accumulator sums
 * alpha * dL/dW_real, so the flush uses weight_exp = -7 (weights in [-1, 1)) and the update is
 * lr * B^0.5 * L R^T quantised to 2^-7, the same units as the SGD scheme.
 */
#ifndef LRT_DEVICE_H
#define LRT_DEVICE_H

#include "lrt_app.h"
#include "lrt_lowrank.h"
#include "lrt_nvm.h"
#include "lrt_train.h"

typedef struct {
    /* network and trainer buffers (sizes: lrt_train.h) */
    lrt_net *net;
    lrt_train_config train;
    lrt_train_buffers buf;
    uint32_t act_size, scratch_size, cell_count; /* as declared by main.c, checked at init */
    uint32_t lrt_block_size; /* bytes of buf.lrt_block (scheme LRT), checked at init */
    /* LRT (scheme LRT only): acc[i] for every layer i (NULL for layers without an
     * accumulator), one shared work buffer, one int16 delta row of the widest layer */
    lrt_lowrank *const *acc;
    /* lrt_conv_sum: conv_sum[i] the exact pseudo-batch sum of layer i's whole-sample blocks
     * (lrt_train_whole_sample_block), NULL for a layer stepped once per sample; conv_sum
     * itself NULL for none */
    lrt_lowrank_sum *const *conv_sum;
    uint16_t *acc_samples;            /* [n_layers] samples since the last flush check */
    uint16_t batch_conv, batch_dense; /* pseudo-batch B per layer kind */
    int16_t *delta_row;
    uint32_t delta_row_len;
    /* weight store: nvm (mounted, bound to net->blob) or NULL for the RAM store over ram_blob */
    lrt_nvm *nvm;
    uint8_t *nvm_region; /* writable alias of the NVM region (drift), or NULL */
    int8_t *ram_blob;
    /* endurance budget (nvm only; endurance 0 = no throttle) */
    lrt_nvm_budget budget;
    /* identity for HELLO */
    uint8_t fingerprint[4];
    uint8_t store_state; /* LRT_PROTO_STORE_* found at boot (main.c) */
    uint8_t max_norm;    /* lrt-maxnorm */
} lrt_device_setup;

typedef struct {
    lrt_device_setup s;
    lrt_trainer trainer;
    lrt_wstore ws;
    lrt_wstore_ram ram;
    lrt_train_hooks hooks;
    lrt_app_handlers handlers;
    uint32_t throttled;   /* flushes deferred by the endurance budget */
    uint32_t rho_min_q16; /* current write-density threshold (budget may raise) */
    uint8_t pushing;      /* a pushed weight set is being staged */
    uint32_t push_next;   /* its next WRITE starts at or after this blob offset */
    uint32_t bye_samples; /* trainer samples at the last session's end (or push) */
} lrt_device;

/* Checks the declared buffer sizes against the library's size helpers (LRT_ERR_SIZE names
 * a generator/library mismatch at boot instead of a silent overflow), binds the store and
 * the hooks. */
int lrt_device_init(lrt_device *dev, const lrt_device_setup *setup);

/* The protocol handlers of this device (ctx = dev). */
const lrt_app_handlers *lrt_device_handlers(lrt_device *dev);

#endif /* LRT_DEVICE_H */
