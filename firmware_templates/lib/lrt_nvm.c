/* lrt_nvm.c - NVM write-wear layer: layout, mount and the commit protocol (see lrt_nvm.h,
 * docs/NVM_FORMAT.md). The endurance budget is lrt_nvm_budget.c, simulated drift
 * lrt_nvm_drift.c.
 *
 * Commit order, the reason power loss is harmless: the target slot is never the current one;
 * its blob and wear table are rewritten first (each page/word only if it differs), then a
 * sync, then the header, then a sync. Until the header's last word lands, the target either
 * still carries its old header (now failing its blob/table CRC) or a blank/torn header, so
 * mount keeps choosing the previous set.
 *
 * Flash commits stream the target slot through a RAM window in increasing address order. A
 * page holding metadata is always rewritten (its header changes). Any other page starts
 * "clean": each window is compared with what the target page holds and nothing is touched
 * while they agree. At the first window that differs, the page is erased, the windows before
 * it are programmed again (they held the right bytes: the current set's, or, for at most one
 * window whose writes restored the target's bytes, the copy kept in `restore`), and from then
 * on every window is programmed as it leaves RAM.
 */
#include "lrt_nvm.h"

#include <string.h>

#include "lrt_crc32.h"
#include "lrt_util.h"

enum { ST_UNMOUNTED = 0, ST_IDLE = 1, ST_COMMIT = 2 };
/* Flash page being streamed: untouched so far (no window differed), or erased. REOPEN: a page
 * finished earlier that a backward write re-opened (window = page). */
enum { PG_CLEAN = 0, PG_DIRTY = 1, PG_REOPEN = 2 };

#define CMP_CHUNK 32u /* stack buffer for compare/verify reads */
#define NO_POS 0xFFFFFFFFu

/* ---- little-endian helpers ---- */

static uint32_t round_up(uint32_t x, uint32_t a)
{
    return (x + a - 1u) / a * a;
}

static uint64_t round_up64(uint64_t x, uint64_t a)
{
    return (x + a - 1u) / a * a;
}

static int is_pow2(uint32_t x)
{
    return x != 0u && (x & (x - 1u)) == 0u;
}

/* ---- layout ---- */

static int layout_for(const lrt_nvm_config *c, uint32_t n, uint64_t region, lrt_nvm_layout *o)
{
    uint64_t table, meta, slot;

    if (c->tech == LRT_NVM_TECH_FLASH) {
        /* The table has an entry per slot page, so the page count is a fixed point:
         * the fewest pages k with header + table(k) + blob <= k pages. */
        uint64_t P = c->page_size;
        uint64_t k = (LRT_NVM_HEADER_SIZE + (uint64_t)c->blob_size + P - 1u) / P;
        for (;;) {
            if (k * P * n > region)
                return LRT_ERR_NOSPACE;
            table = 4ull * n * k;
            meta = round_up64(LRT_NVM_HEADER_SIZE + table, o->align);
            if (meta + c->blob_size <= k * P)
                break;
            k = (meta + c->blob_size + P - 1u) / P;
        }
        o->blob_units = (uint32_t)(k - 1u);
        slot = k * P;
    } else {
        table = 4ull * n * (1ull + o->blob_units);
        if (table > 0x40000000ull)
            return LRT_ERR_NOSPACE;
        meta = round_up64(LRT_NVM_HEADER_SIZE + table, o->align);
        slot = meta + round_up(c->blob_size, o->align);
        if (slot * n > region)
            return LRT_ERR_NOSPACE;
    }
    o->n_slots = n;
    o->table_len = (uint32_t)table;
    o->meta_size = (uint32_t)meta;
    o->slot_size = (uint32_t)slot;
    return LRT_OK;
}

int lrt_nvm_layout_get(const lrt_nvm_config *c, lrt_nvm_layout *o)
{
    uint64_t region;
    uint32_t n;

    if (c == NULL || o == NULL || c->prog == NULL || (c->read == NULL && c->mapped == NULL))
        return LRT_ERR_ARG;
    if (!is_pow2(c->prog_size) || c->prog_size > LRT_NVM_MAX_PROG || c->page_size == 0u ||
        c->page_size % c->prog_size != 0u || c->page_count == 0u || c->blob_size == 0u ||
        c->blob_size > 0x40000000u || c->n_slots == 1u || c->n_slots > LRT_NVM_MAX_SLOTS)
        return LRT_ERR_ARG;
    memset(o, 0, sizeof *o);
    o->align = LRT_MAX(c->prog_size, 4u);
    if (c->tech == LRT_NVM_TECH_FLASH) {
        uint32_t w = c->chunk_size;
        if (c->erase == NULL || c->page_size < LRT_NVM_HEADER_SIZE)
            return LRT_ERR_ARG;
        if (w != 0u && w < c->page_size && (w % o->align != 0u || c->page_size % w != 0u))
            return LRT_ERR_ARG;
        o->unit_size = c->page_size;
    } else if (c->tech == LRT_NVM_TECH_RRAM) {
        uint32_t u = c->wear_unit ? c->wear_unit : c->prog_size;
        /* A unit must not straddle write-buffer chunks: its count is "+1 per chunk flush". */
        if (u % c->prog_size != 0u || c->page_size % u != 0u)
            return LRT_ERR_ARG;
        o->unit_size = u;
        o->blob_units = (c->blob_size + u - 1u) / u;
    } else {
        return LRT_ERR_ARG;
    }
    region = (uint64_t)c->page_size * c->page_count;
    if (region > 0xFFFFFFFFull)
        return LRT_ERR_ARG;
    if (c->n_slots != 0u)
        return layout_for(c, c->n_slots, region, o);
    for (n = LRT_NVM_MAX_SLOTS; n >= 2u; n--)
        if (layout_for(c, n, region, o) == LRT_OK)
            return LRT_OK;
    return LRT_ERR_NOSPACE;
}

static uint32_t window_size(const lrt_nvm_config *c)
{
    if (c->tech != LRT_NVM_TECH_FLASH || c->chunk_size == 0u || c->chunk_size >= c->page_size)
        return c->page_size;
    return c->chunk_size;
}

static uint32_t marks_bytes(const lrt_nvm_layout *l)
{
    return round_up(1u + l->blob_units, 4u);
}

/* A (unit + 1, count) pair per slot: the most-worn unit of a slot left behind worn by
 * dropped commits, until a landed commit's table holds it. */
static uint32_t carry_bytes(const lrt_nvm_layout *l)
{
    return 8u * l->n_slots;
}

size_t lrt_nvm_work_size(const lrt_nvm_config *cfg)
{
    lrt_nvm_layout l;
    uint32_t w;

    if (lrt_nvm_layout_get(cfg, &l) != LRT_OK)
        return 0;
    w = window_size(cfg);
    return (size_t)round_up(w, 4u) * (w < cfg->page_size ? 2u : 1u) + marks_bytes(&l) +
           carry_bytes(&l);
}

/* ---- raw access ---- */

static uint32_t slot_base(const lrt_nvm *nvm, uint32_t s)
{
    return s * nvm->lay.slot_size;
}

static uint32_t blob_addr(const lrt_nvm *nvm, uint32_t s)
{
    return slot_base(nvm, s) + nvm->lay.meta_size;
}

static uint32_t blob_area(const lrt_nvm *nvm)
{
    return round_up(nvm->cfg->blob_size, nvm->lay.align);
}

static int raw_read(const lrt_nvm *nvm, uint32_t addr, void *buf, uint32_t len)
{
    const lrt_nvm_config *c = nvm->cfg;

    if (len == 0u)
        return LRT_OK;
    if (c->mapped != NULL) {
        memcpy(buf, c->mapped + addr, len);
        return LRT_OK;
    }
    return c->read(c, addr, buf, len);
}

static int raw_prog(lrt_nvm *nvm, uint32_t addr, const uint8_t *buf, uint32_t len)
{
    const lrt_nvm_config *c = nvm->cfg;
    uint8_t tmp[CMP_CHUNK];
    uint32_t done = 0;
    int err = c->prog(c, addr, buf, len);

    if (err != LRT_OK)
        return err < 0 ? err : LRT_ERR_IO;
    nvm->last.prog_ops++;
    nvm->last.prog_bytes += len;
    /* Read back: a cell that did not take the value (worn out, a NOR rule violated) is an
     * I/O error now rather than a CRC failure at the next boot. */
    while (done < len) {
        uint32_t n = LRT_MIN(len - done, CMP_CHUNK);
        err = raw_read(nvm, addr + done, tmp, n);
        if (err != LRT_OK)
            return err;
        if (memcmp(tmp, buf + done, n) != 0)
            return LRT_ERR_IO;
        done += n;
    }
    return LRT_OK;
}

static int raw_erase(lrt_nvm *nvm, uint32_t addr)
{
    const lrt_nvm_config *c = nvm->cfg;
    int err = c->erase(c, addr);

    if (err != LRT_OK)
        return err < 0 ? err : LRT_ERR_IO;
    nvm->last.erases++;
    return LRT_OK;
}

static int raw_sync(const lrt_nvm *nvm)
{
    const lrt_nvm_config *c = nvm->cfg;
    int err;

    if (c->sync == NULL)
        return LRT_OK;
    err = c->sync(c);
    return err == LRT_OK ? LRT_OK : (err < 0 ? err : LRT_ERR_IO);
}

/* 1 if stored bytes at addr equal buf, 0 if not, negative on a read error. */
static int raw_equal(const lrt_nvm *nvm, uint32_t addr, const uint8_t *buf, uint32_t len)
{
    uint8_t tmp[CMP_CHUNK];
    uint32_t done = 0;

    if (nvm->cfg->mapped != NULL)
        return memcmp(nvm->cfg->mapped + addr, buf, len) == 0;
    while (done < len) {
        uint32_t n = LRT_MIN(len - done, CMP_CHUNK);
        int err = raw_read(nvm, addr + done, tmp, n);
        if (err != LRT_OK)
            return err;
        if (memcmp(tmp, buf + done, n) != 0)
            return 0;
        done += n;
    }
    return 1;
}

static int raw_crc(const lrt_nvm *nvm, uint32_t addr, uint32_t len, uint32_t *crc)
{
    uint8_t tmp[CMP_CHUNK];
    uint32_t done = 0, c = 0;

    if (nvm->cfg->mapped != NULL) {
        *crc = lrt_crc32_update(0, nvm->cfg->mapped + addr, len);
        return LRT_OK;
    }
    while (done < len) {
        uint32_t n = LRT_MIN(len - done, CMP_CHUNK);
        int err = raw_read(nvm, addr + done, tmp, n);
        if (err != LRT_OK)
            return err;
        c = lrt_crc32_update(c, tmp, n);
        done += n;
    }
    *crc = c;
    return LRT_OK;
}

/* ---- header ---- */

typedef struct {
    uint32_t slot, generation, blob_crc, table_crc, units_written;
    int other_version;
} hdr_fields;

static void hdr_encode(const lrt_nvm *nvm, const hdr_fields *f, uint8_t *h)
{
    const lrt_nvm_config *c = nvm->cfg;

    memset(h, 0, LRT_NVM_HEADER_SIZE);
    lrt_put_le32(h + 0, LRT_NVM_MAGIC);
    lrt_put_le16(h + 4, LRT_NVM_VERSION);
    h[6] = c->tech;
    h[7] = (uint8_t)f->slot;
    lrt_put_le32(h + 8, f->generation);
    lrt_put_le32(h + 12, c->blob_size);
    lrt_put_le32(h + 16, f->blob_crc);
    lrt_put_le32(h + 20, nvm->lay.table_len);
    lrt_put_le32(h + 24, f->table_crc);
    lrt_put_le32(h + 28, c->page_size);
    lrt_put_le16(h + 32, c->prog_size);
    lrt_put_le16(h + 34, nvm->lay.n_slots);
    lrt_put_le32(h + 36, nvm->lay.slot_size);
    lrt_put_le32(h + 40, nvm->lay.meta_size);
    lrt_put_le32(h + 44, nvm->lay.unit_size);
    h[48] = c->erase_value;
    lrt_put_le32(h + 52, f->units_written);
    lrt_put_le32(h + 56, c->model_id);
    lrt_put_le32(h + 60, lrt_crc32_update(0, h, 60));
}

/* LRT_NVM_SLOT_* of a header read from slot s; fills f when the header itself is good. */
static int hdr_check(const lrt_nvm *nvm, uint32_t s, const uint8_t *h, hdr_fields *f)
{
    const lrt_nvm_config *c = nvm->cfg;
    uint32_t i;

    for (i = 0; i < LRT_NVM_HEADER_SIZE; i++)
        if (h[i] != c->erase_value)
            break;
    if (i == LRT_NVM_HEADER_SIZE)
        return LRT_NVM_SLOT_BLANK;
    if (lrt_get_le32(h) != LRT_NVM_MAGIC || lrt_get_le32(h + 60) != lrt_crc32_update(0, h, 60) ||
        lrt_get_le32(h + 8) == 0u)
        return LRT_NVM_SLOT_BAD_HEADER;
    f->slot = h[7];
    f->generation = lrt_get_le32(h + 8);
    f->blob_crc = lrt_get_le32(h + 16);
    f->table_crc = lrt_get_le32(h + 24);
    f->units_written = lrt_get_le32(h + 52);
    /* A sound header of another format version (an older firmware's store): its layout rules
     * differ, so its fields cannot be trusted to locate anything; never used. */
    f->other_version = (uint32_t)lrt_get_le16(h + 4) != LRT_NVM_VERSION;
    if (f->other_version)
        return LRT_NVM_SLOT_FOREIGN;
    if (h[6] != c->tech || f->slot != s || lrt_get_le32(h + 12) != c->blob_size ||
        lrt_get_le32(h + 20) != nvm->lay.table_len || lrt_get_le32(h + 28) != c->page_size ||
        (uint32_t)lrt_get_le16(h + 32) != c->prog_size ||
        (uint32_t)lrt_get_le16(h + 34) != nvm->lay.n_slots ||
        lrt_get_le32(h + 36) != nvm->lay.slot_size || lrt_get_le32(h + 40) != nvm->lay.meta_size ||
        lrt_get_le32(h + 44) != nvm->lay.unit_size || h[48] != c->erase_value ||
        lrt_get_le32(h + 56) != c->model_id)
        return LRT_NVM_SLOT_FOREIGN;
    return LRT_NVM_SLOT_VALID;
}

static void set_bound(lrt_nvm *nvm)
{
    if (nvm->bound != NULL)
        *nvm->bound = lrt_nvm_blob(nvm);
}

/* ---- mount ---- */

/* The table the wear counts are read from: the current set's when it verifies (always, unless
 * the mount is degraded), else the newest of ours that does; -1 when none does. */
static int32_t wear_source(const lrt_nvm *nvm, const lrt_nvm_mount_info *mi, uint32_t table_ok)
{
    int32_t best = -1;
    uint32_t s;

    if (nvm->cur >= 0 && (table_ok >> nvm->cur & 1u))
        return nvm->cur;
    for (s = 0; s < nvm->lay.n_slots; s++)
        if ((table_ok >> s & 1u) &&
            (best < 0 || mi->slot_generation[s] > mi->slot_generation[best]))
            best = (int32_t)s;
    return best;
}

int lrt_nvm_mount(lrt_nvm *nvm, const lrt_nvm_config *cfg, void *work, size_t work_size,
                  lrt_nvm_mount_info *info)
{
    lrt_nvm_mount_info local;
    lrt_nvm_mount_info *mi = info != NULL ? info : &local;
    uint8_t h[LRT_NVM_HEADER_SIZE];
    int32_t best = -1, best_bad = -1;
    uint32_t best_gen = 0, best_bad_gen = 0, s, w;
    uint32_t n_blank = 0, n_bad_header = 0, table_ok = 0;
    int err;

    if (nvm == NULL || work == NULL)
        return LRT_ERR_ARG;
    memset(nvm, 0, sizeof *nvm);
    nvm->cur = -1;
    nvm->target = -1;
    nvm->wear_src = -1;
    nvm->pending = -1;
    nvm->cfg = cfg;
    err = lrt_nvm_layout_get(cfg, &nvm->lay);
    if (err != LRT_OK)
        return err;
    if (work_size < lrt_nvm_work_size(cfg))
        return LRT_ERR_SIZE;
    w = window_size(cfg);
    nvm->win_size = w;
    nvm->win = (uint8_t *)work;
    nvm->restore = w < cfg->page_size ? nvm->win + round_up(w, 4u) : NULL;
    nvm->marks = nvm->win + round_up(w, 4u) * (w < cfg->page_size ? 2u : 1u);
    nvm->carry = (uint32_t *)(void *)(nvm->marks + marks_bytes(&nvm->lay));
    memset(nvm->carry, 0, carry_bytes(&nvm->lay));
    nvm->restore_pos = NO_POS;
    memset(mi, 0, sizeof *mi);
    mi->slot = -1;
    mi->wear_slot = -1;

    for (s = 0; s < nvm->lay.n_slots; s++) {
        hdr_fields f;
        uint32_t crc;
        int st;

        err = raw_read(nvm, slot_base(nvm, s), h, LRT_NVM_HEADER_SIZE);
        if (err != LRT_OK)
            return err;
        st = hdr_check(nvm, s, h, &f);
        if (st == LRT_NVM_SLOT_VALID || st == LRT_NVM_SLOT_FOREIGN)
            mi->slot_generation[s] = f.generation;
        if (st == LRT_NVM_SLOT_FOREIGN) {
            /* someone else's set: never a commit target, and its generation is not ours */
            nvm->foreign |= 1u << s;
            mi->flags |= LRT_NVM_F_FOREIGN | (f.other_version ? LRT_NVM_F_VERSION : 0u);
        }
        if (st == LRT_NVM_SLOT_VALID) {
            /* a header of ours dates the slot even if its data drifted: new commits must be
             * newer */
            nvm->max_gen = LRT_MAX(nvm->max_gen, f.generation);
            err = raw_crc(nvm, slot_base(nvm, s) + LRT_NVM_HEADER_SIZE, nvm->lay.table_len, &crc);
            if (err != LRT_OK)
                return err;
            if (crc == f.table_crc)
                table_ok |= 1u << s;
            else
                st = LRT_NVM_SLOT_BAD_DATA;
            err = raw_crc(nvm, blob_addr(nvm, s), cfg->blob_size, &crc);
            if (err != LRT_OK)
                return err;
            if (crc != f.blob_crc)
                st = LRT_NVM_SLOT_BAD_DATA;
        }
        mi->slot_state[s] = (uint8_t)st;
        switch (st) {
        case LRT_NVM_SLOT_BLANK: n_blank++; break;
        case LRT_NVM_SLOT_BAD_HEADER: n_bad_header++; break;
        case LRT_NVM_SLOT_VALID:
            mi->n_valid++;
            if (best < 0 || f.generation > best_gen) {
                best = (int32_t)s;
                best_gen = f.generation;
            }
            break;
        case LRT_NVM_SLOT_BAD_DATA:
            if (best_bad < 0 || f.generation > best_bad_gen) {
                best_bad = (int32_t)s;
                best_bad_gen = f.generation;
            }
            break;
        default: break;
        }
    }
    for (s = 0; s < nvm->lay.n_slots; s++)
        if (mi->slot_state[s] == LRT_NVM_SLOT_BAD_DATA)
            mi->n_corrupt++;
    mi->n_corrupt += n_bad_header;
    nvm->state = ST_IDLE;

    if (best >= 0) {
        /* A header we cannot date may have been the newest; say so (the caller may log it). */
        if (n_bad_header > 0u || (best_bad >= 0 && best_bad_gen > best_gen))
            mi->flags |= LRT_NVM_F_FALLBACK;
        nvm->cur = best;
        nvm->gen = best_gen;
    } else if (best_bad >= 0) {
        /* Nothing verifies: drifted cells, not a torn commit (a commit never touches the
         * current slot). Running on the newest set beats bricking; the flag tells. */
        mi->flags |= LRT_NVM_F_DEGRADED | LRT_NVM_F_FALLBACK;
        nvm->cur = best_bad;
        nvm->gen = best_bad_gen;
    } else if (n_blank == nvm->lay.n_slots) {
        mi->flags |= LRT_NVM_F_EMPTY;
    } else {
        set_bound(nvm);
        return LRT_ERR_CORRUPT;
    }
    nvm->wear_src = wear_source(nvm, mi, table_ok);
    if (nvm->cur >= 0 && nvm->wear_src != nvm->cur)
        mi->flags |= LRT_NVM_F_WEAR_STALE;
    mi->slot = nvm->cur;
    mi->generation = nvm->gen;
    mi->wear_slot = nvm->wear_src;
    set_bound(nvm);
    return LRT_OK;
}

int lrt_nvm_may_initialise(int r, const lrt_nvm_mount_info *info)
{
    if (info == NULL || (info->flags & LRT_NVM_F_FOREIGN))
        return 0;
    return r == LRT_ERR_CORRUPT || (r == LRT_OK && (info->flags & LRT_NVM_F_EMPTY));
}

int lrt_nvm_format(lrt_nvm *nvm)
{
    uint8_t blank[LRT_NVM_HEADER_SIZE];
    uint32_t s;
    int err;

    if (nvm == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (nvm->state != ST_IDLE)
        return LRT_ERR_STATE;
    memset(blank, nvm->cfg->erase_value, sizeof blank);
    for (s = 0; s < nvm->lay.n_slots; s++) {
        if (nvm->cfg->tech == LRT_NVM_TECH_FLASH)
            err = raw_erase(nvm, slot_base(nvm, s));
        else
            err = raw_prog(nvm, slot_base(nvm, s), blank, LRT_NVM_HEADER_SIZE);
        if (err != LRT_OK)
            return err;
    }
    err = raw_sync(nvm);
    nvm->state = ST_UNMOUNTED;
    nvm->cur = -1;
    nvm->wear_src = -1;
    set_bound(nvm);
    return err;
}

const int8_t *lrt_nvm_blob(const lrt_nvm *nvm)
{
    if (nvm == NULL || nvm->cfg == NULL || nvm->cur < 0 || nvm->cfg->mapped == NULL)
        return NULL;
    return (const int8_t *)(nvm->cfg->mapped + blob_addr(nvm, (uint32_t)nvm->cur));
}

void lrt_nvm_bind(lrt_nvm *nvm, const int8_t **ptr)
{
    if (nvm == NULL)
        return;
    nvm->bound = ptr;
    set_bound(nvm);
}

int lrt_nvm_read(const lrt_nvm *nvm, uint32_t offset, void *buf, uint32_t len)
{
    if (nvm == NULL || nvm->state == ST_UNMOUNTED || (buf == NULL && len > 0u))
        return LRT_ERR_ARG;
    if (nvm->cur < 0)
        return LRT_ERR_STATE;
    if (offset > nvm->cfg->blob_size || len > nvm->cfg->blob_size - offset)
        return LRT_ERR_ARG;
    return raw_read(nvm, blob_addr(nvm, (uint32_t)nvm->cur) + offset, buf, len);
}

uint32_t lrt_nvm_generation(const lrt_nvm *nvm)
{
    return nvm != NULL ? nvm->gen : 0u;
}

int32_t lrt_nvm_current_slot(const lrt_nvm *nvm)
{
    return nvm != NULL ? nvm->cur : -1;
}

const lrt_nvm_commit_stats *lrt_nvm_last_commit(const lrt_nvm *nvm)
{
    return nvm != NULL ? &nvm->last : NULL;
}

/* ---- wear table ---- */

/* Table entries [i0, i0 + n) (entry = slot * (1 + blob_units) + unit) as they stand, as
 * little-endian u32 into dst: the stored counts (0 without a table), plus the programs of the
 * commit in progress or of dropped commits into the pending slot and the counts of slots
 * those wore out, which only RAM knows so far. */
static int wear_run(const lrt_nvm *nvm, uint32_t i0, uint32_t n, uint8_t *dst)
{
    uint32_t per = 1u + nvm->lay.blob_units, i, s;

    if (nvm->wear_src >= 0) {
        int err =
            raw_read(nvm, slot_base(nvm, (uint32_t)nvm->wear_src) + LRT_NVM_HEADER_SIZE + 4u * i0,
                     dst, 4u * n);
        if (err != LRT_OK)
            return err;
    } else {
        memset(dst, 0, 4u * n);
    }
    if (nvm->pending >= 0) {
        uint32_t row = (uint32_t)nvm->pending * per;
        for (i = LRT_MAX(i0, row); i < LRT_MIN(i0 + n, row + per); i++)
            if (nvm->marks[i - row] != 0u)
                lrt_put_le32(dst + 4u * (i - i0),
                             lrt_get_le32(dst + 4u * (i - i0)) + nvm->marks[i - row]);
    }
    for (s = 0; nvm->carried && s < nvm->lay.n_slots; s++) {
        i = s * per + nvm->carry[2u * s] - 1u;
        if (nvm->carry[2u * s] != 0u && i >= i0 && i < i0 + n &&
            lrt_get_le32(dst + 4u * (i - i0)) < nvm->carry[2u * s + 1u])
            lrt_put_le32(dst + 4u * (i - i0), nvm->carry[2u * s + 1u]);
    }
    return LRT_OK;
}

static int wear_of(const lrt_nvm *nvm, uint32_t s, uint32_t unit, uint32_t *v)
{
    uint8_t b[4];
    int err = wear_run(nvm, s * (1u + nvm->lay.blob_units) + unit, 1, b);

    *v = err == LRT_OK ? lrt_get_le32(b) : 0u;
    return err;
}

int lrt_nvm_wear_get(const lrt_nvm *nvm, uint32_t slot, uint32_t unit, uint32_t *count)
{
    if (nvm == NULL || count == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (slot >= nvm->lay.n_slots || unit > nvm->lay.blob_units)
        return LRT_ERR_ARG;
    return wear_of(nvm, slot, unit, count);
}

/* Most programs of any unit of slot s (wear_of's counts); at (may be NULL): the first unit
 * with that count. */
static int slot_max(const lrt_nvm *nvm, uint32_t s, uint32_t *mx, uint32_t *at)
{
    uint8_t b[CMP_CHUNK];
    uint32_t per = 1u + nvm->lay.blob_units, u, k;

    *mx = 0;
    if (at != NULL)
        *at = 0;
    for (u = 0; u < per; u += CMP_CHUNK / 4u) {
        uint32_t n = LRT_MIN(per - u, CMP_CHUNK / 4u);
        int err = wear_run(nvm, s * per + u, n, b);
        if (err != LRT_OK)
            return err;
        for (k = 0; k < n; k++) {
            uint32_t v = lrt_get_le32(b + 4u * k);
            if (v > *mx && at != NULL)
                *at = u + k;
            *mx = LRT_MAX(*mx, v);
        }
    }
    return LRT_OK;
}

/* Slot the next commit writes: round robin after the current one, skipping worn slots and
 * other models' sets. On flash a commit erases its target's table first, so the slot whose
 * table the counts come from (a degraded mount: not the current one) is taken last. */
static int next_target(const lrt_nvm *nvm, uint32_t *out, uint32_t *out_max)
{
    uint32_t n = nvm->lay.n_slots, i, worn = 0;
    int32_t avoid =
        nvm->cfg->tech == LRT_NVM_TECH_FLASH && nvm->wear_src != nvm->cur ? nvm->wear_src : -1;

    for (i = 0; i < 2u * n; i++) {
        uint32_t s = nvm->cur < 0 ? i % n : ((uint32_t)nvm->cur + 1u + i) % n;
        uint32_t mx = 0;
        int err;

        if ((int32_t)s == nvm->cur || (nvm->foreign >> s & 1u) || (i < n && (int32_t)s == avoid))
            continue;
        worn = 1;
        if (nvm->cfg->endurance != 0u) {
            err = slot_max(nvm, s, &mx, NULL);
            if (err != LRT_OK)
                return err;
            if (mx >= nvm->cfg->endurance)
                continue;
        }
        *out = s;
        if (out_max != NULL)
            *out_max = mx;
        return LRT_OK;
    }
    return worn ? LRT_ERR_WORN : LRT_ERR_NOSPACE;
}

int lrt_nvm_wear_summary(const lrt_nvm *nvm, lrt_nvm_wear *out)
{
    uint32_t s, u, v, next;
    int err;

    if (nvm == NULL || out == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    memset(out, 0, sizeof *out);
    for (s = 0; s < nvm->lay.n_slots; s++) {
        for (u = 0; u <= nvm->lay.blob_units; u++) {
            err = wear_of(nvm, s, u, &v);
            if (err != LRT_OK)
                return err;
            if (u == 0u) {
                out->max_meta = LRT_MAX(out->max_meta, v);
            } else {
                out->max_blob = LRT_MAX(out->max_blob, v);
                out->total_blob += v;
                out->n_units++;
            }
        }
    }
    err = next_target(nvm, &next, NULL);
    if (err == LRT_ERR_WORN || err == LRT_ERR_NOSPACE) {
        out->next_max = nvm->cfg->endurance;
        return LRT_OK;
    }
    if (err != LRT_OK)
        return err;
    return slot_max(nvm, next, &out->next_max, NULL);
}

int lrt_nvm_wear_range(const lrt_nvm *nvm, uint32_t offset, uint32_t len, uint32_t *max_out)
{
    uint32_t s, u, u0, u1, v;
    const lrt_nvm_layout *lay;

    if (nvm == NULL || max_out == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    *max_out = 0;
    if (len == 0u)
        return LRT_OK;
    lay = &nvm->lay;
    if (offset > nvm->cfg->blob_size || len > nvm->cfg->blob_size - offset)
        return LRT_ERR_ARG;
    if (nvm->cfg->tech == LRT_NVM_TECH_FLASH) {
        u0 = (lay->meta_size + offset) / lay->unit_size;
        u1 = (lay->meta_size + offset + len - 1u) / lay->unit_size;
    } else {
        u0 = 1u + offset / lay->unit_size;
        u1 = 1u + (offset + len - 1u) / lay->unit_size;
    }
    for (s = 0; s < lay->n_slots; s++) {
        for (u = u0; u <= u1; u++) {
            int err = wear_of(nvm, s, u, &v);
            if (err != LRT_OK)
                return err;
            *max_out = LRT_MAX(*max_out, v);
        }
    }
    return LRT_OK;
}

/* ---- commit ---- */

/* The first wear unit of the blob: RRAM's unit 0 is the slot's metadata, flash's holds both. */
static uint32_t first_blob_unit(const lrt_nvm *nvm)
{
    return nvm->cfg->tech == LRT_NVM_TECH_FLASH ? 0u : 1u;
}

/* Count a program of the target's unit u before it happens. Writes that keep going
 * backwards (or commits dropped and retried) can program a unit many times before a table
 * records it: past the endurance limit, or past what one byte per unit can count, the
 * program is refused rather than done uncounted. */
static int mark_wear(lrt_nvm *nvm, uint32_t u)
{
    uint32_t v;

    if (nvm->marks[u] == 255u)
        return LRT_ERR_WORN;
    /* below the headroom the count cannot reach the limit: no table read (the common case) */
    if (nvm->cfg->endurance != 0u && nvm->marks[u] >= nvm->headroom) {
        int err = wear_of(nvm, (uint32_t)nvm->target, u, &v);
        if (err != LRT_OK)
            return err;
        if (v >= nvm->cfg->endurance)
            return LRT_ERR_WORN;
    }
    if (nvm->marks[u] == 0u && u >= first_blob_unit(nvm))
        nvm->last.blob_units++;
    nvm->marks[u]++;
    return LRT_OK;
}

static int all_erased(const lrt_nvm *nvm, const uint8_t *buf, uint32_t len)
{
    uint32_t i;

    for (i = 0; i < len; i++)
        if (buf[i] != nvm->cfg->erase_value)
            return 0;
    return 1;
}

/* Drop the open commit. `pending` keeps naming the target, so the programs it did stay in
 * `marks` for the next commit into that slot. */
static int fail(lrt_nvm *nvm, int err)
{
    nvm->state = ST_IDLE;
    nvm->win_loaded = 0;
    nvm->target = -1;
    return err;
}

/* ---- RRAM: the blob in page_size windows, word-wise write skip ---- */

/* Program `len` bytes of buf at addr, skipping words that already hold their value (runs of
 * differing words coalesced into one prog). mark: count blob wear units (rel0 = blob offset
 * of addr). */
static int rram_write(lrt_nvm *nvm, uint32_t addr, const uint8_t *buf, uint32_t len, int mark,
                      uint32_t rel0)
{
    uint32_t p = nvm->cfg->prog_size, w = 0, last_unit = 0xFFFFFFFFu;

    while (w < len) {
        uint32_t run = w;
        int eq;

        eq = raw_equal(nvm, addr + w, buf + w, p);
        if (eq < 0)
            return eq;
        if (eq) {
            w += p;
            continue;
        }
        while (run < len) {
            eq = raw_equal(nvm, addr + run, buf + run, p);
            if (eq < 0)
                return eq;
            if (eq)
                break;
            if (mark) {
                /* the padding after the blob, up to the program size, wears its last unit */
                uint32_t u = LRT_MIN((rel0 + run) / nvm->lay.unit_size, nvm->lay.blob_units - 1u);
                if (u != last_unit) {
                    eq = mark_wear(nvm, 1u + u);
                    if (eq != LRT_OK)
                        return eq;
                }
                last_unit = u;
            }
            run += p;
        }
        eq = raw_prog(nvm, addr + w, buf + w, run - w);
        if (eq != LRT_OK)
            return eq;
        w = run;
    }
    return LRT_OK;
}

static uint32_t rram_len(const lrt_nvm *nvm, uint32_t start)
{
    return LRT_MIN(nvm->cfg->page_size, blob_area(nvm) - start);
}

/* win <- blob bytes [start, +page) of slot `from` (zeros when from < 0); past the blob: erase
 * value. */
static int rram_load(lrt_nvm *nvm, uint32_t start, int32_t from)
{
    uint32_t n = LRT_MIN(rram_len(nvm, start), nvm->cfg->blob_size - start);

    memset(nvm->win, nvm->cfg->erase_value, nvm->cfg->page_size);
    nvm->win_pos = start;
    if (from < 0) {
        memset(nvm->win, 0, n);
        return LRT_OK;
    }
    return raw_read(nvm, blob_addr(nvm, (uint32_t)from) + start, nvm->win, n);
}

static int rram_flush(lrt_nvm *nvm)
{
    nvm->win_loaded = 0;
    return rram_write(nvm, blob_addr(nvm, (uint32_t)nvm->target) + nvm->win_pos, nvm->win,
                      rram_len(nvm, nvm->win_pos), 1, nvm->win_pos);
}

/* Make the window at blob offset `start` the one held, flushing the previous one and carrying
 * over the windows skipped on the way. RRAM words can be rewritten, so a window already
 * flushed is simply loaded back from the target. */
static int rram_select(lrt_nvm *nvm, uint32_t start)
{
    int err;

    if (nvm->win_loaded && nvm->win_pos == start)
        return LRT_OK;
    if (nvm->win_loaded) {
        err = rram_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    if (start < nvm->high_water) {
        nvm->last.reopened++;
        err = rram_load(nvm, start, nvm->target);
    } else {
        for (; nvm->high_water < start; nvm->high_water += nvm->cfg->page_size) {
            err = rram_load(nvm, nvm->high_water, nvm->cur);
            if (err == LRT_OK)
                err = rram_flush(nvm);
            if (err != LRT_OK)
                return err;
        }
        nvm->high_water = start + nvm->cfg->page_size;
        err = rram_load(nvm, start, nvm->cur);
    }
    if (err == LRT_OK)
        nvm->win_loaded = 1;
    return err;
}

static int rram_stream_write(lrt_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t len)
{
    uint32_t P = nvm->cfg->page_size;

    while (len > 0u) {
        uint32_t in = offset % P, n = LRT_MIN(len, P - in);
        int err = rram_select(nvm, offset - in);

        if (err != LRT_OK)
            return err;
        memcpy(nvm->win + in, src, n);
        offset += n;
        src += n;
        len -= n;
    }
    return LRT_OK;
}

static int rram_stream_end(lrt_nvm *nvm)
{
    int err;

    if (nvm->win_loaded) {
        err = rram_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    for (; nvm->high_water < blob_area(nvm); nvm->high_water += nvm->cfg->page_size) {
        err = rram_load(nvm, nvm->high_water, nvm->cur);
        if (err == LRT_OK)
            err = rram_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    return LRT_OK;
}

/* ---- flash: the whole target slot streamed through the window ---- */

static uint32_t meta_pages(const lrt_nvm *nvm)
{
    uint32_t P = nvm->cfg->page_size;

    return (LRT_NVM_HEADER_SIZE + nvm->lay.table_len + P - 1u) / P;
}

/* New content of the target's slot bytes [pos, pos + n) where nothing was written: erase value
 * for the header and table (programmed at commit_end) and past the blob, else the current
 * set's bytes (zeros on a fresh device). */
static int carry(const lrt_nvm *nvm, uint32_t pos, uint8_t *buf, uint32_t n)
{
    uint32_t lo = LRT_MAX(pos, nvm->lay.meta_size);
    uint32_t hi = LRT_MIN(pos + n, nvm->lay.meta_size + nvm->cfg->blob_size);

    memset(buf, nvm->cfg->erase_value, n);
    if (lo >= hi)
        return LRT_OK;
    if (nvm->cur < 0) {
        memset(buf + (lo - pos), 0, hi - lo);
        return LRT_OK;
    }
    return raw_read(nvm, slot_base(nvm, (uint32_t)nvm->cur) + lo, buf + (lo - pos), hi - lo);
}

/* Program buf at slot offset pos of the target (erased there), skipping words that are
 * already the erase value: runs of other words go out as one prog. */
static int prog_skip(lrt_nvm *nvm, uint32_t pos, const uint8_t *buf, uint32_t n)
{
    uint32_t p = nvm->cfg->prog_size, i = 0;
    uint32_t addr = slot_base(nvm, (uint32_t)nvm->target) + pos;

    while (i < n) {
        uint32_t j;
        int err;

        if (all_erased(nvm, buf + i, p)) {
            i += p;
            continue;
        }
        for (j = i + p; j < n && !all_erased(nvm, buf + j, p); j += p)
            ;
        err = raw_prog(nvm, addr + i, buf + i, j - i);
        if (err != LRT_OK)
            return err;
        i = j;
    }
    return LRT_OK;
}

/* Erase the target page holding slot offset `pos` (a window start) and program again the
 * windows of that page below pos: they were left untouched because they already held their
 * new content, which is the current set's (carried over) except for the one window saved in
 * `restore`. The restore buffer then serves as scratch; with a page-sized window there is no
 * window below pos. */
static int page_erase_rebuild(lrt_nvm *nvm, uint32_t pos)
{
    uint32_t P = nvm->cfg->page_size, w = nvm->win_size, pg = pos / P, a;
    int err;

    err = mark_wear(nvm, pg);
    if (err == LRT_OK)
        err = raw_erase(nvm, slot_base(nvm, (uint32_t)nvm->target) + pg * P);
    if (err == LRT_OK && nvm->restore_pos != NO_POS)
        err = prog_skip(nvm, nvm->restore_pos, nvm->restore, w);
    for (a = pg * P; err == LRT_OK && a < pos; a += w) {
        if (a == nvm->restore_pos)
            continue;
        err = carry(nvm, a, nvm->restore, w);
        if (err == LRT_OK)
            err = prog_skip(nvm, a, nvm->restore, w);
    }
    nvm->restore_pos = NO_POS;
    nvm->page_mode = PG_DIRTY;
    return err;
}

static int win_load(lrt_nvm *nvm, uint32_t pos, int reopen)
{
    uint32_t w = nvm->win_size;
    int err = reopen ? raw_read(nvm, slot_base(nvm, (uint32_t)nvm->target) + pos, nvm->win, w)
                     : carry(nvm, pos, nvm->win, w);

    if (err != LRT_OK)
        return err;
    if (reopen)
        nvm->page_mode = PG_REOPEN;
    else if (nvm->page_mode == PG_REOPEN)
        nvm->page_mode = PG_CLEAN; /* (window = page) reset by win_flush at the page start */
    nvm->win_pos = pos;
    nvm->win_loaded = 1;
    nvm->win_changed = 0;
    return LRT_OK;
}

/* The window leaves RAM: decide about its page and program what must be. */
static int win_flush(lrt_nvm *nvm)
{
    uint32_t P = nvm->cfg->page_size, w = nvm->win_size, pos = nvm->win_pos, pg = pos / P;
    uint32_t addr = slot_base(nvm, (uint32_t)nvm->target) + pos;
    int eq;

    nvm->win_loaded = 0;
    if (nvm->page_mode == PG_REOPEN) {
        eq = raw_equal(nvm, addr, nvm->win, w);
        if (eq != 0)
            return eq < 0 ? eq : LRT_OK;
        eq = mark_wear(nvm, pg);
        if (eq == LRT_OK)
            eq = raw_erase(nvm, addr);
        return eq != LRT_OK ? eq : prog_skip(nvm, pos, nvm->win, w);
    }
    if (pos % P == 0u) {
        nvm->restore_pos = NO_POS;
        nvm->page_mode = PG_CLEAN;
        if (pg < meta_pages(nvm)) {
            /* The header changes with every commit: the page is rewritten; erasing it first
             * also invalidates the target's old header at once. */
            eq = page_erase_rebuild(nvm, pos);
            if (eq != LRT_OK)
                return eq;
        }
    }
    if (nvm->page_mode == PG_CLEAN) {
        eq = raw_equal(nvm, addr, nvm->win, w);
        if (eq < 0)
            return eq;
        if (eq) {
            /* A later window of the page may still differ; this one must then be programmed
             * again after the erase: from the current set if that is where its bytes came
             * from, else from the one copy there is room for. */
            if (!nvm->win_changed || pos + w == (pg + 1u) * P)
                return LRT_OK;
            if (nvm->restore_pos == NO_POS) {
                memcpy(nvm->restore, nvm->win, w);
                nvm->restore_pos = pos;
                return LRT_OK;
            }
            nvm->last.early_dirty++;
        }
        eq = page_erase_rebuild(nvm, pos);
        if (eq != LRT_OK)
            return eq;
    }
    return prog_skip(nvm, pos, nvm->win, w);
}

/* Hold the window starting at slot offset ws: flush the one held and stream the windows in
 * between from the current set. Below the high-water mark only whole pages can be re-opened
 * (the caller checks that the window is a page). */
static int win_select(lrt_nvm *nvm, uint32_t ws)
{
    uint32_t w = nvm->win_size;
    int err;

    if (nvm->win_loaded && nvm->win_pos == ws)
        return LRT_OK;
    if (nvm->win_loaded) {
        err = win_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    if (ws < nvm->high_water) {
        nvm->last.reopened++;
        return win_load(nvm, ws, 1);
    }
    for (; nvm->high_water < ws; nvm->high_water += w) {
        err = win_load(nvm, nvm->high_water, 0);
        if (err == LRT_OK)
            err = win_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    nvm->high_water = ws + w;
    return win_load(nvm, ws, 0);
}

static int flash_stream_write(lrt_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t len)
{
    uint32_t w = nvm->win_size;

    while (len > 0u) {
        uint32_t q = nvm->lay.meta_size + offset, ws = q - q % w, n = LRT_MIN(len, ws + w - q);
        int err;

        if (ws < nvm->high_water && !(nvm->win_loaded && nvm->win_pos == ws) &&
            w < nvm->cfg->page_size) {
            /* Already programmed and no page buffer to redo it: fine if nothing changes. */
            err = raw_equal(nvm, slot_base(nvm, (uint32_t)nvm->target) + q, src, n);
            if (err <= 0)
                return err < 0 ? err : LRT_ERR_UNSUPPORTED;
        } else {
            err = win_select(nvm, ws);
            if (err != LRT_OK)
                return err;
            if (memcmp(nvm->win + (q - ws), src, n) != 0) {
                memcpy(nvm->win + (q - ws), src, n);
                nvm->win_changed = 1;
            }
        }
        offset += n;
        src += n;
        len -= n;
    }
    return LRT_OK;
}

static int flash_stream_end(lrt_nvm *nvm)
{
    int err;

    if (nvm->win_loaded) {
        err = win_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    for (; nvm->high_water < nvm->lay.slot_size; nvm->high_water += nvm->win_size) {
        err = win_load(nvm, nvm->high_water, 0);
        if (err == LRT_OK)
            err = win_flush(nvm);
        if (err != LRT_OK)
            return err;
    }
    return LRT_OK;
}

/* ---- both ---- */

/* The pending slot is left behind (next_target found it worn, counting its dropped
 * programs): keep its most-worn unit's count, so that it stays out of rotation and the next
 * landed commit's table records it. */
static int keep_worn(lrt_nvm *nvm)
{
    uint32_t s = (uint32_t)nvm->pending, best, at;
    int err = slot_max(nvm, s, &best, &at);

    if (err != LRT_OK)
        return err;
    nvm->carry[2u * s] = at + 1u;
    nvm->carry[2u * s + 1u] = best;
    nvm->carried = 1;
    nvm->pending = -1;
    return LRT_OK;
}

int lrt_nvm_commit_begin(lrt_nvm *nvm)
{
    uint32_t t, mx, u;
    int err;

    if (nvm == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (nvm->state != ST_IDLE)
        return LRT_ERR_STATE;
    if (nvm->max_gen == 0xFFFFFFFFu)
        return LRT_ERR_WORN;
    err = next_target(nvm, &t, &mx);
    if (err != LRT_OK)
        return err;
    nvm->target = (int32_t)t;
    nvm->headroom = nvm->cfg->endurance - mx; /* >= 1: the slot is not worn */
    nvm->win_loaded = 0;
    nvm->high_water = 0;
    nvm->restore_pos = NO_POS;
    nvm->page_mode = PG_CLEAN;
    memset(&nvm->last, 0, sizeof nvm->last);
    if ((int32_t)t != nvm->pending) {
        if (nvm->pending >= 0) {
            err = keep_worn(nvm); /* left behind: its dropped commits wore it out */
            if (err != LRT_OK)
                return err;
        }
        memset(nvm->marks, 0, marks_bytes(&nvm->lay));
    } else {
        /* units the dropped commits programmed: the new table adds to them too */
        for (u = first_blob_unit(nvm); u <= nvm->lay.blob_units; u++)
            nvm->last.blob_units += nvm->marks[u] != 0u;
    }
    nvm->pending = (int32_t)t;
    if (nvm->wear_src == (int32_t)t && nvm->wear_src != nvm->cur &&
        nvm->cfg->tech == LRT_NVM_TECH_FLASH)
        nvm->wear_src = -1; /* its table is erased now: the counts restart from zero */
    nvm->state = ST_COMMIT;
    return LRT_OK;
}

int lrt_nvm_commit_write(lrt_nvm *nvm, uint32_t offset, const void *data, uint32_t len)
{
    int err;

    if (nvm == NULL || nvm->state == ST_UNMOUNTED || (data == NULL && len > 0u))
        return LRT_ERR_ARG;
    if (nvm->state != ST_COMMIT)
        return LRT_ERR_STATE;
    if (offset > nvm->cfg->blob_size || len > nvm->cfg->blob_size - offset)
        return LRT_ERR_ARG;
    if (nvm->cfg->tech == LRT_NVM_TECH_RRAM)
        err = rram_stream_write(nvm, offset, (const uint8_t *)data, len);
    else
        err = flash_stream_write(nvm, offset, (const uint8_t *)data, len);
    return err == LRT_OK ? LRT_OK : fail(nvm, err);
}

/* Table bytes [a, b) (offsets into the table) of the new wear table. */
static int table_fill(lrt_nvm *nvm, uint8_t *dst, uint32_t a, uint32_t b, uint32_t *crc)
{
    int err = wear_run(nvm, a / 4u, (b - a) / 4u, dst); /* the target's: + its programs */

    if (err != LRT_OK)
        return err;
    *crc = lrt_crc32_update(*crc, dst, b - a); /* the piece at once: CRC-32 is incremental */
    return LRT_OK;
}

/* The new wear table into the target, in window-sized pieces. Flash: its words were erased
 * with the metadata pages and are programmed now; RRAM: unchanged words are skipped. */
static int table_write(lrt_nvm *nvm, uint32_t *table_crc)
{
    const lrt_nvm_config *c = nvm->cfg;
    /* pieces of whole counters and program words: a window of, say, 66 bytes would cut a
     * counter in two (the layout allows any page that is a multiple of prog_size) */
    uint32_t W = LRT_MAX(nvm->lay.align, nvm->win_size - nvm->win_size % nvm->lay.align);
    uint32_t base = slot_base(nvm, (uint32_t)nvm->target), crc = 0, a;

    for (a = 0; a < nvm->lay.table_len; a += W) {
        uint32_t b = LRT_MIN(a + W, nvm->lay.table_len), n = round_up(b - a, c->prog_size);
        int err;

        memset(nvm->win, c->erase_value, n);
        err = table_fill(nvm, nvm->win, a, b, &crc);
        if (err == LRT_OK) {
            if (c->tech == LRT_NVM_TECH_RRAM)
                err = rram_write(nvm, base + LRT_NVM_HEADER_SIZE + a, nvm->win, n, 0, 0);
            else
                err = prog_skip(nvm, LRT_NVM_HEADER_SIZE + a, nvm->win, n);
        }
        if (err != LRT_OK)
            return err;
    }
    *table_crc = crc;
    return LRT_OK;
}

int lrt_nvm_commit_end(lrt_nvm *nvm)
{
    uint8_t h[LRT_NVM_HEADER_SIZE];
    hdr_fields f;
    int err;

    if (nvm == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (nvm->state != ST_COMMIT)
        return LRT_ERR_STATE;
    if (nvm->cfg->tech == LRT_NVM_TECH_RRAM) {
        err = rram_stream_end(nvm);
        if (err == LRT_OK)
            err = mark_wear(nvm, 0); /* the metadata words, rewritten from here on */
    } else {
        err = flash_stream_end(nvm);
    }
    if (err != LRT_OK)
        return fail(nvm, err);
    /* CRC of what is stored (every prog was read back), so writes in any order work. */
    memset(&f, 0, sizeof f);
    f.slot = (uint32_t)nvm->target;
    f.generation = nvm->max_gen + 1u;
    f.units_written = nvm->last.blob_units;
    err = raw_crc(nvm, blob_addr(nvm, (uint32_t)nvm->target), nvm->cfg->blob_size, &f.blob_crc);
    if (err == LRT_OK)
        err = table_write(nvm, &f.table_crc);
    /* Data before header: a write-back cache must not reorder them. */
    if (err == LRT_OK)
        err = raw_sync(nvm);
    if (err != LRT_OK)
        return fail(nvm, err);
    hdr_encode(nvm, &f, h);
    if (nvm->cfg->tech == LRT_NVM_TECH_RRAM)
        err = rram_write(nvm, slot_base(nvm, f.slot), h, LRT_NVM_HEADER_SIZE, 0, 0);
    else
        err = raw_prog(nvm, slot_base(nvm, f.slot), h, LRT_NVM_HEADER_SIZE);
    if (err == LRT_OK)
        err = raw_sync(nvm);
    if (err != LRT_OK)
        return fail(nvm, err);
    nvm->cur = nvm->target;
    nvm->wear_src = nvm->target;
    nvm->pending = -1;
    memset(nvm->carry, 0, carry_bytes(&nvm->lay)); /* the new table holds them */
    nvm->carried = 0;
    nvm->gen = f.generation;
    nvm->max_gen = f.generation;
    nvm->target = -1;
    nvm->state = ST_IDLE;
    set_bound(nvm);
    return LRT_OK;
}

int lrt_nvm_commit_abort(lrt_nvm *nvm)
{
    if (nvm == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (nvm->state != ST_COMMIT)
        return LRT_ERR_STATE;
    return fail(nvm, LRT_OK);
}

/* ---- lrt_wstore adapter ---- */

static int ws_begin(void *ctx)
{
    return lrt_nvm_commit_begin((lrt_nvm *)ctx);
}

static int ws_write(void *ctx, uint32_t offset, const void *data, uint32_t len)
{
    return lrt_nvm_commit_write((lrt_nvm *)ctx, offset, data, len);
}

static int ws_commit(void *ctx)
{
    return lrt_nvm_commit_end((lrt_nvm *)ctx);
}

static int ws_abort(void *ctx)
{
    return lrt_nvm_commit_abort((lrt_nvm *)ctx);
}

int lrt_nvm_wstore(lrt_wstore *ws, lrt_nvm *nvm)
{
    if (ws == NULL || nvm == NULL)
        return LRT_ERR_ARG;
    ws->begin = ws_begin;
    ws->write = ws_write;
    ws->commit = ws_commit;
    ws->abort = ws_abort;
    ws->ctx = nvm;
    return LRT_OK;
}

int lrt_nvm_blob_addr(const lrt_nvm *nvm, uint32_t offset, uint32_t len, uint32_t *addr)
{
    if (nvm == NULL || addr == NULL || nvm->state == ST_UNMOUNTED)
        return LRT_ERR_ARG;
    if (nvm->state != ST_IDLE || nvm->cur < 0)
        return LRT_ERR_STATE;
    if (offset > nvm->cfg->blob_size || len > nvm->cfg->blob_size - offset)
        return LRT_ERR_ARG;
    *addr = blob_addr(nvm, (uint32_t)nvm->cur) + offset;
    return LRT_OK;
}
