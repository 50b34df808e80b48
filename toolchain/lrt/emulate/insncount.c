/* insncount.c - QEMU TCG plugin: exact count of executed guest instructions.
 *
 * Debian's QEMU 7.2 supports TCG plugins but ships no qemu-plugin.h, so the few v1 API
 * entry points used here are declared below (ABI of include/qemu/qemu-plugin.h, 7.x).
 * Built at run time by lrt.emulate.qemu with `cc -shared -fPIC`.
 *
 * Arguments (-plugin libinsncount.so,lo=0x..,hi=0x..,out=FILE):
 *   lo, hi  count instructions whose address is in [lo, hi) separately (e.g. one function)
 *   out     write "total N\nrange M\n" to FILE at exit (else to QEMU's log: -d plugin)
 *   prof    also write a profile to FILE at exit: one line "pc count" per executed guest
 *           instruction address (lrt.emulate.qemu.profile_instructions sums it per function)
 * Every instruction gets an inline counter add (no helper call), so the count is exact
 * per executed instruction, not per translated block.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
                                                enum qemu_plugin_op op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
void qemu_plugin_outs(const char *string);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t total_count;
static uint64_t range_count;
static uint64_t range_lo;
static uint64_t range_hi;
static char out_path[4096];
static char prof_path[4096];

/* Profile: one record per translated block (a block may be translated more than once; the
 * reader sums by address). Executions are counted per block, then credited to each of its
 * instructions: exact for straight-line blocks, which is what TCG blocks are. */
typedef struct tb_rec {
    struct tb_rec *next;
    uint64_t count;
    size_t n;
    uint64_t pc[];
} tb_rec;
static tb_rec *tb_list;

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;
    if (prof_path[0]) {
        tb_rec *rec = calloc(1, sizeof *rec + n * sizeof rec->pc[0]);
        if (rec != NULL) {
            rec->n = n;
            for (i = 0; i < n; ++i) {
                rec->pc[i] = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
            }
            rec->next = tb_list;
            tb_list = rec;
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &rec->count,
                                                     1);
        }
    }
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &total_count, 1);
        if (pc >= range_lo && pc < range_hi) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &range_count, 1);
        }
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    char line[128];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "total %" PRIu64 "\nrange %" PRIu64 "\n", total_count,
             range_count);
    if (out_path[0]) {
        FILE *fh = fopen(out_path, "w");
        if (fh) {
            fputs(line, fh);
            fclose(fh);
        }
    } else {
        qemu_plugin_outs(line);
    }
    if (prof_path[0]) {
        FILE *fh = fopen(prof_path, "w");
        const tb_rec *rec;
        size_t i;
        for (rec = tb_list; fh != NULL && rec != NULL; rec = rec->next) {
            for (i = 0; rec->count && i < rec->n; ++i) {
                fprintf(fh, "%" PRIx64 " %" PRIu64 "\n", rec->pc[i], rec->count);
            }
        }
        if (fh) {
            fclose(fh);
        }
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "lo=", 3) == 0) {
            range_lo = strtoull(argv[i] + 3, NULL, 0);
        } else if (strncmp(argv[i], "hi=", 3) == 0) {
            range_hi = strtoull(argv[i] + 3, NULL, 0);
        } else if (strncmp(argv[i], "prof=", 5) == 0) {
            snprintf(prof_path, sizeof prof_path, "%s", argv[i] + 5);
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else {
            fprintf(stderr, "insncount: unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
