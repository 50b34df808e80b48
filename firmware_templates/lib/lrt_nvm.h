/* lrt_nvm.h - NVM write-wear layer: atomic, write-skipping weight-set commits with wear counters.
 *
 * The storage is described like littlefs's lfs_config: read / prog / erase / sync callbacks
 * plus geometry and a technology:
 *  - LRT_NVM_TECH_FLASH: NOR rules. prog only clears bits (1 -> 0), erase sets a whole page
 *    to erase_value; endurance is counted in erase cycles per page.
 *  - LRT_NVM_TECH_RRAM: per-word writes, no erase (RRAM, MRAM, FRAM, PCM); endurance is
 *    counted in writes per word ("cell").
 *
 * The region holds n_slots slots; each holds one complete weight set ("blob": all layers' int8
 * weights + a snapshot of the int32 biases) behind a header with a generation number and
 * CRCs. A commit writes the slot after the current one (round robin = wear levelling over all
 * slots) and writes its header last, so a power cut anywhere leaves the previous set valid.
 * Only words (RRAM) / pages (flash) whose content differs from what the target slot already
 * holds are programmed. On flash a slot's metadata shares its first page with the blob, and a
 * commit streams through a small RAM window (cfg.chunk_size), so large erase sectors (e.g.
 * 128 KiB on STM32F4) need neither a sector-sized RAM buffer nor a sector per metadata block.
 * Byte layout: docs/NVM_FORMAT.md.
 *
 * Typical use:
 *     lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info);   (after reset)
 *     lrt_nvm_bind(&nvm, &net.blob);                          (net.blob follows commits)
 *     lrt_nvm_commit_begin(&nvm);
 *     lrt_nvm_commit_write(&nvm, off, bytes, n); ...          (increasing offsets are cheapest)
 *     lrt_nvm_commit_end(&nvm);                               (blob pointer moves)
 */
#ifndef LRT_NVM_H
#define LRT_NVM_H

#include "lrt_common.h"
#include "lrt_wstore.h"

#define LRT_NVM_MAGIC 0x4E54524Cu /* "LRTN" as little-endian bytes */
#define LRT_NVM_VERSION                                                                            \
    3u /* 3: headers carry the model id; 2: flash metadata shares the                              \
        * slot's first page */
#define LRT_NVM_HEADER_SIZE 64u
#define LRT_NVM_MAX_SLOTS 32u
#define LRT_NVM_MAX_PROG 64u /* largest prog_size (the header is one multiple of it) */

typedef enum {
    LRT_NVM_TECH_FLASH = 1,
    LRT_NVM_TECH_RRAM = 2, /* also MRAM, FRAM, PCM: word-writable, no erase */
} lrt_nvm_tech;

struct lrt_nvm_config;

typedef struct lrt_nvm_config {
    /* Addresses are byte offsets from the start of the NVM region. prog gets addr and len in
     * multiples of prog_size; erase gets a page-aligned addr (flash only, may be NULL for
     * RRAM); sync makes previous progs durable (may be NULL). Return LRT_OK or negative. */
    int (*read)(const struct lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len);
    int (*prog)(const struct lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len);
    int (*erase)(const struct lrt_nvm_config *c, uint32_t addr);
    int (*sync)(const struct lrt_nvm_config *c);
    void *context;
    /* Read-only memory-mapped view of the region, or NULL. When set, reads bypass `read` and
     * lrt_nvm_blob() returns a pointer the forward pass reads weights through in place. */
    const uint8_t *mapped;
    uint32_t prog_size;  /* bytes per program unit (word): power of two, 1..LRT_NVM_MAX_PROG */
    uint32_t page_size;  /* flash: erase page; RRAM: write-buffer size. Multiple of prog_size */
    uint32_t page_count; /* region = page_count * page_size bytes */
    uint32_t blob_size;  /* bytes of one weight set */
    /* RRAM: bytes per wear counter, a multiple of prog_size (0 = prog_size: exact per-word
     * counts). Coarser units shrink the counter table; a unit's count is then the number of
     * commits that programmed any word in it (an upper bound for each of its words). Flash:
     * ignored, the unit is the page. */
    uint32_t wear_unit;
    /* Flash: bytes of the RAM window a commit streams through. 0 or >= page_size: one page
     * (writes may come in any order; a write into an already finished page re-erases it).
     * Smaller: a multiple of max(prog_size, 4) dividing page_size; the work buffer holds two
     * windows instead of a page, and writes must come in increasing offset order (a write
     * below the window that changes stored bytes is LRT_ERR_UNSUPPORTED; the trainer's LRT
     * flushes and bias snapshots are increasing). RRAM: ignored (the window is page_size). */
    uint32_t chunk_size;
    uint32_t endurance;  /* per unit (0 = unlimited); a slot with a unit at it is skipped */
    uint16_t n_slots;    /* 0 = as many as fit (>= 2), else 2..LRT_NVM_MAX_SLOTS */
    uint8_t tech;        /* lrt_nvm_tech */
    uint8_t erase_value; /* flash: value of an erased byte; RRAM: value of a fresh device */
    /* Identity of the model whose sets this store holds (a hash of its layers, shapes and
     * number formats, computed by the toolchain: LRT_MODEL_NVM_ID). A slot written for
     * another model is FOREIGN: never used, and the firmware does not overwrite it unless
     * told to (lrt_nvm_format). */
    uint32_t model_id;
} lrt_nvm_config;

/* Derived layout (docs/NVM_FORMAT.md). Every slot: header, wear table, blob.
 * Wear units: RRAM: unit 0 = the metadata, units 1..blob_units = the blob in unit_size pieces.
 * Flash: unit k = the slot's k-th page (unit 0 = the page holding the header), so a slot has
 * 1 + blob_units pages. */
typedef struct {
    uint32_t n_slots;
    uint32_t slot_size;  /* stride between slots, bytes (flash: whole pages) */
    uint32_t meta_size;  /* header + wear table, padded; the blob starts here in a slot */
    uint32_t table_len;  /* bytes of the wear table = 4 * n_slots * (1 + blob_units) */
    uint32_t blob_units; /* RRAM: wear units of the blob; flash: pages per slot - 1 */
    uint32_t unit_size;  /* bytes per wear unit (flash: page_size) */
    uint32_t align;      /* alignment of meta_size (the blob start): max(prog_size, 4) */
} lrt_nvm_layout;

/* What the last commit did (for write-skip tests and reports). */
typedef struct {
    uint32_t prog_ops;    /* prog calls */
    uint32_t prog_bytes;  /* bytes passed to prog */
    uint32_t erases;      /* erase calls */
    uint32_t blob_units;  /* wear units programmed: flash: slot pages erased (metadata
                           * pages included); RRAM: blob units with a programmed word */
    uint32_t reopened;    /* windows flushed again because a write went backwards */
    uint32_t early_dirty; /* flash, sub-page window: pages erased before their last window
                           * was seen, because a second window that restores the target's
                           * bytes could not be remembered (docs/NVM_FORMAT.md) */
} lrt_nvm_commit_stats;

/* lrt_nvm_mount_info.flags */
#define LRT_NVM_F_EMPTY 0x01u    /* no slot holds anything: a fresh device, commit a set */
#define LRT_NVM_F_FALLBACK 0x02u /* a newer (or undatable) slot failed verification */
#define LRT_NVM_F_DEGRADED                                                                         \
    0x04u /* no slot verified; running on the newest slot whose header                             \
           * is good but whose blob/table CRC is not (drifted cells) */
#define LRT_NVM_F_VERSION                                                                          \
    0x08u /* a slot holds a well-formed header of another format version                           \
           * (a store written by an older firmware): not used (FOREIGN) */
#define LRT_NVM_F_FOREIGN                                                                          \
    0x10u /* a slot holds a well-formed header of another model, geometry                          \
           * or format version: not used, and not ours to overwrite */
#define LRT_NVM_F_WEAR_STALE                                                                       \
    0x40u /* the current set's wear table failed its CRC (a degraded mount):                       \
           * the counts come from the newest set whose table verifies, or                          \
           * restart at zero when none does (mount_info.wear_slot -1) */

/* lrt_nvm_mount_info.slot_state[] */
enum {
    LRT_NVM_SLOT_BLANK = 0, /* header area all erase_value */
    LRT_NVM_SLOT_VALID = 1,
    LRT_NVM_SLOT_BAD_HEADER = 2, /* not blank, header magic/CRC/version wrong */
    LRT_NVM_SLOT_FOREIGN = 3,    /* good header of another model / geometry / version */
    LRT_NVM_SLOT_BAD_DATA = 4,   /* good header, blob or table CRC wrong */
};

typedef struct {
    int32_t slot;        /* slot in use, -1 if none */
    uint32_t generation; /* its generation (0 if none) */
    uint32_t n_valid;
    uint32_t n_corrupt; /* BAD_HEADER + BAD_DATA */
    uint32_t flags;     /* LRT_NVM_F_* */
    uint8_t slot_state[LRT_NVM_MAX_SLOTS];
    uint32_t slot_generation[LRT_NVM_MAX_SLOTS]; /* header generation, 0 if no good header */
    int32_t wear_slot; /* slot whose wear table the counts come from, -1 if none */
} lrt_nvm_mount_info;

typedef struct {
    const lrt_nvm_config *cfg;
    lrt_nvm_layout lay;
    uint8_t *win;         /* work: the window (win_size bytes) */
    uint8_t *restore;     /* work (flash, window < page): one saved window, else NULL */
    uint8_t *marks;       /* work: per wear unit, programs of the target not yet in its table:
                           * this commit's, plus those of dropped commits into the same slot */
    uint32_t *carry;      /* work: per slot, (unit + 1, count) of its most-worn unit when
                           * dropped commits wore it out (0: none), until a table holds it */
    uint8_t carried;      /* some slot has a carry entry */
    uint32_t headroom;    /* endurance - the target's most-worn count at commit_begin */
    uint32_t win_size;    /* flash: min(chunk_size, page_size); RRAM: page_size */
    int32_t cur;          /* slot holding the newest set, -1 if none */
    int32_t wear_src;     /* slot whose wear table holds the counts (cur unless it failed) */
    int32_t pending;      /* slot whose dropped commits' programs `marks` still holds, or -1 */
    uint32_t foreign;     /* bit s: slot s holds another model's / geometry's / version's set */
    uint32_t gen;         /* its generation */
    uint32_t max_gen;     /* highest generation seen in any good header */
    int32_t target;       /* slot being written during a commit */
    uint32_t win_pos;     /* start of the window held (flash: slot offset; RRAM: blob offset) */
    uint32_t high_water;  /* [0, high_water) of the target holds the new content */
    uint32_t restore_pos; /* flash: slot offset of the window in `restore`, or UINT32_MAX */
    uint8_t win_loaded;
    uint8_t win_changed;  /* a write changed the window against what it was loaded with */
    uint8_t page_mode;    /* flash: state of the page being streamed (lrt_nvm.c) */
    uint8_t state;        /* 0 unmounted, 1 idle, 2 committing */
    const int8_t **bound; /* lrt_nvm_bind: kept equal to lrt_nvm_blob() */
    lrt_nvm_commit_stats last;
} lrt_nvm;

/* Layout of cfg; LRT_ERR_ARG for a bad geometry, LRT_ERR_NOSPACE if two slots do not fit. */
int lrt_nvm_layout_get(const lrt_nvm_config *cfg, lrt_nvm_layout *out);

/* Bytes of the caller-provided work buffer; 0 if cfg is bad. Flash: the window
 * (min(chunk_size, page_size), chunk_size 0 = page_size), a second window when it is smaller
 * than a page, and one byte per slot page; RRAM: page_size + one byte per wear unit. Each part
 * is rounded up to 4 bytes; then 8 bytes per slot. */
size_t lrt_nvm_work_size(const lrt_nvm_config *cfg);

/* Scan all slots, verify headers and CRCs, select the newest valid set. LRT_OK when a set was
 * found (info->flags may say FALLBACK or DEGRADED) or the region is blank (F_EMPTY);
 * LRT_ERR_CORRUPT when nothing usable is stored (commit a fresh set). info may be NULL. The
 * work buffer must be 4-byte aligned and live as long as nvm. */
int lrt_nvm_mount(lrt_nvm *nvm, const lrt_nvm_config *cfg, void *work, size_t work_size,
                  lrt_nvm_mount_info *info);

/* May the firmware commit its built-in set after this mount (r = its result) without the
 * user's say-so? Yes when nothing that belongs to anyone would be lost: the store is blank or
 * holds only unreadable headers (a first commit cut by power loss). No when a slot holds
 * another model's (or format version's) set: that is formatting, an explicit user action. */
int lrt_nvm_may_initialise(int r, const lrt_nvm_mount_info *info);

/* Invalidate every slot's header (flash: erase the slot's first page; RRAM: program it to
 * erase_value) so that the next mount finds the store blank. Destroys every set, ours or
 * foreign: only on the user's explicit request. Call after lrt_nvm_mount (any result but a
 * bad geometry), then mount again. Not counted in the wear table (it is erased too). */
int lrt_nvm_format(lrt_nvm *nvm);

/* The current set in place (memory-mapped NVM), or NULL (not mapped / no set). */
const int8_t *lrt_nvm_blob(const lrt_nvm *nvm);

/* Keep *ptr equal to lrt_nvm_blob() after every commit (e.g. &net.blob); call after mount
 * (mount starts with nvm zeroed). */
void lrt_nvm_bind(lrt_nvm *nvm, const int8_t **ptr);

/* Copy bytes of the current set (works without a mapping). */
int lrt_nvm_read(const lrt_nvm *nvm, uint32_t offset, void *buf, uint32_t len);

uint32_t lrt_nvm_generation(const lrt_nvm *nvm);
int32_t lrt_nvm_current_slot(const lrt_nvm *nvm);

/* Streaming commit. Bytes not written are carried over from the current set (zeros if there
 * is none). Writes in increasing offset order touch each page once; a write below an earlier
 * one is still correct but reprograms its page (flash with a sub-page window: refused with
 * LRT_ERR_UNSUPPORTED unless it changes nothing; the commit is then dropped). The current set
 * stays readable (and lrt_nvm_blob unchanged) until commit_end returns.
 * The target is the next slot after the current one that is neither worn (a unit at the
 * endurance limit) nor foreign; LRT_ERR_WORN if every other slot is worn, LRT_ERR_NOSPACE if
 * the rest are foreign. A commit that would program a unit past the endurance limit, or more
 * than 255 times before a table records it, is dropped with LRT_ERR_WORN before it does.
 * Programs of a dropped commit (error or abort) are not lost: they are added to the table of
 * the next commit into the same slot, or, when they wore the slot out, its most-worn count
 * to the next landed commit's table (until a reset, which loses them as a power cut does).
 * docs/NVM_FORMAT.md, "Wear table". */
int lrt_nvm_commit_begin(lrt_nvm *nvm);
int lrt_nvm_commit_write(lrt_nvm *nvm, uint32_t offset, const void *data, uint32_t len);
int lrt_nvm_commit_end(lrt_nvm *nvm);
/* Drop the open commit; the current set is untouched (the target slot may be left invalid). */
int lrt_nvm_commit_abort(lrt_nvm *nvm);

const lrt_nvm_commit_stats *lrt_nvm_last_commit(const lrt_nvm *nvm);

/* Wear counters as stored with the current set (plus programs of dropped commits that RAM
 * holds for the next commit into their slot): unit 0 is the slot's metadata (header + table:
 * rewritten on every commit into the slot; flash: the slot's first page), units 1..blob_units
 * the blob's units (flash: the slot's further pages). */
int lrt_nvm_wear_get(const lrt_nvm *nvm, uint32_t slot, uint32_t unit, uint32_t *count);

typedef struct {
    uint32_t max_blob;   /* most-worn blob unit over all slots */
    uint32_t max_meta;   /* most-worn metadata area (= commits into the busiest slot) */
    uint64_t total_blob; /* sum over all blob units */
    uint32_t n_units;    /* blob units over all slots */
    uint32_t next_max;   /* most-worn unit (blob or meta) of the slot the next commit uses */
} lrt_nvm_wear;

int lrt_nvm_wear_summary(const lrt_nvm *nvm, lrt_nvm_wear *out);

/* Physical wear of blob bytes [offset, offset + len): the largest count, over every slot, of
 * the wear units holding them (RRAM: programs of the unit; flash: erases of the page, each
 * followed by its programming; the first page also holds the metadata, so it counts every
 * commit into its slot). These are the cells' real program operations: slot catch-up
 * copies and re-writes of drifted bytes included. len 0 gives 0. */
int lrt_nvm_wear_range(const lrt_nvm *nvm, uint32_t offset, uint32_t len, uint32_t *max_out);

/* Adapter: the trainer's transaction interface (lrt_wstore.h) over this layer. */
int lrt_nvm_wstore(lrt_wstore *ws, lrt_nvm *nvm);

/* ---- Endurance budget (integer only; Python twin in toolchain/lrt/nvm.py) ---- */

typedef struct {
    uint32_t endurance;       /* cycles per unit */
    uint32_t target_days;     /* lifetime the device must reach */
    uint32_t sample_rate_mhz; /* samples per 1000 s (1000 = one sample per second) */
    uint32_t burst;           /* cycles that may be spent ahead of the linear schedule */
} lrt_nvm_budget;

typedef struct {
    uint8_t allow;           /* 1: this flush fits the budget */
    uint32_t rho_min_q16;    /* write-density threshold to use from now on (Q16, >= base) */
    uint32_t allowed;        /* cycles the schedule grants at this sample count */
    uint32_t projected_days; /* lifetime if wear continues at the rate it would reach */
} lrt_nvm_throttle;

/* Days from the first sample until the most-worn unit reaches `endurance`, if wear goes on at
 * the rate observed so far (worst cycles in `samples` samples). UINT32_MAX if no wear yet. */
uint32_t lrt_nvm_projected_lifetime_days(uint32_t endurance, uint32_t worst, uint64_t samples,
                                         uint32_t sample_rate_mhz);

/* Would a flush that brings the worst unit to `worst_after` cycles after `samples` samples
 * keep to the budget? The schedule grants burst + endurance * elapsed / target cycles. When it
 * does not, rho_min is raised in proportion to the overshoot (so fewer flushes pass). */
int lrt_nvm_budget_check(const lrt_nvm_budget *b, uint32_t worst_after, uint64_t samples,
                         uint32_t rho_min_q16, lrt_nvm_throttle *out);

/* budget_check for the next commit of nvm (worst unit of the slot it would write, + 1). */
int lrt_nvm_flush_allowed(const lrt_nvm *nvm, const lrt_nvm_budget *b, uint64_t samples,
                          uint32_t rho_min_q16, lrt_nvm_throttle *out);

/* ---- Drift models (the paper's environments c and d), integer only ---- */

/* Flip every bit of buf independently with probability p_q32 / 2^32; returns flips. */
uint32_t lrt_nvm_drift_bits(uint8_t *buf, uint32_t len, uint32_t p_q32, uint32_t *rng);

/* Add round(sigma * z) to every int8 in w (z ~ N(0,1) approximated by the Irwin-Hall sum of
 * 12 uniforms, sigma = sigma_q16 / 65536 in LSB), clip to [-128, 127]; returns cells changed. */
uint32_t lrt_nvm_drift_noise(int8_t *w, uint32_t len, uint32_t sigma_q16, uint32_t *rng);

#define LRT_NVM_DRIFT_ANALOG 1  /* param = sigma in LSB, Q16 */
#define LRT_NVM_DRIFT_DIGITAL 2 /* param = flip probability per bit, Q32 (as uint32) */

/* Region address of the current set's bytes [offset, offset + len) (for lrt_nvm_drift_apply):
 * LRT_ERR_ARG unmounted or out of the blob, LRT_ERR_STATE during a commit or without a set. */
int lrt_nvm_blob_addr(const lrt_nvm *nvm, uint32_t offset, uint32_t len, uint32_t *addr);

/* Apply drift to the current set's bytes [offset, offset + len) the way cell drift does:
 * silently, through `region` (a writable alias of the whole NVM region: RAM or emulated NVM),
 * without a prog and without updating any CRC. The running device sees it at once through the
 * mapping; the next commit carries the drifted bytes over and seals them with a fresh CRC.
 * A reboot before that finds the slot's CRC broken and falls back (docs/NVM_FORMAT.md).
 * Returns the number of bytes changed (>= 0) or a negative lrt_err. */
int32_t lrt_nvm_drift_apply(lrt_nvm *nvm, uint8_t *region, uint32_t offset, uint32_t len, int kind,
                            uint32_t param, uint32_t seed);

#endif /* LRT_NVM_H */
