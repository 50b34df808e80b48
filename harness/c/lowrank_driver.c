/* lowrank_driver.c - drives lrt_lowrank / lrt_fixmath from text commands on stdin.
 *
 * Used by tests/c/test_lowrank*.py through harness/lowrank.py. Whitespace-separated tokens:
 *   I n m rank mode maxnorm batch_pow2 max_block rho_q16 lr_q24 discount_q16 b_cap beta_q30 seed
 *   S u_exp v_offset v_exp u[n] v[m]          one column u (v + v_offset)^T as a block step
 *                                              (prints nothing unless it fails)
 *   B k left_exp right_exp left[n*k] right[m*k]   block step (int32, column-major)
 *   W seeds                                    replay every S/B/E since the last I for
 *                                              seeds 0..seeds-1 (the seed loop in C); prints
 *                                              the mean estimate and mean ||est - mean||^2
 *   E                                          end of sample
 *   D                                          dump the state
 *   F wexp                                     flush plan, nonzero count, all delta rows
 *   C wexp                                     lrt_lowrank_flush_check result
 *   R / X                                      reset / defer
 *   V q a[q*q]                                 lrt_lowrank_svd
 *   M mant exp                                 lrt_mnorm_update on the driver's max-norm state
 *   N bits x_exp out_exp len x[len]            lrt_mnorm_s8 (bits 8) or _s32 (bits 32)
 *   U mant exp                                 lrt_ufx ops self-check values
 *   A exp x[n*m]                               lrt_lowrank_sum_add (the sum bound at I)
 *   P left_exp                                 lrt_lowrank_sum_step into the accumulator
 *   G                                          dump the sum: exp, max_abs, entries
 *   Q                                          quit
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_lowrank.h"

static long rd(void)
{
    long x;
    if (scanf("%ld", &x) != 1) {
        fprintf(stderr, "driver: expected a number\n");
        exit(2);
    }
    return x;
}

static void fail(const char *what, int rc)
{
    printf("error %s %d\n", what, rc);
    exit(1);
}

/* The replay tape: every S/B/E since the last I, as int32 records. */
static int32_t *tape_add(int32_t **tape, size_t *len, size_t *cap, size_t n)
{
    int32_t *rec;
    if (*len + n > *cap) {
        *cap = 2 * (*len + n);
        *tape = realloc(*tape, *cap * sizeof(int32_t));
        if (*tape == NULL) fail("oom", 0);
    }
    rec = *tape + *len;
    *len += n;
    return rec;
}

/* Apply one tape record (the block step works on copies: it overwrites its inputs). */
static int play(lrt_lowrank *acc, const int32_t *rec)
{
    static int32_t *buf;
    static size_t cap;
    size_t len;
    if (rec == NULL) { /* release the copy buffer */
        free(buf);
        buf = NULL;
        cap = 0;
        return 0;
    }
    if (rec[0] == 'E') {
        lrt_lowrank_end_sample(acc);
        return 0;
    }
    len = (size_t)(acc->n + acc->m) * (size_t)rec[1];
    if (len > cap) {
        free(buf);
        cap = len;
        buf = malloc(cap * sizeof(int32_t));
    }
    memcpy(buf, rec + 4, len * sizeof(int32_t));
    return lrt_lowrank_step_block(acc, buf, rec[2], buf + (size_t)acc->n * rec[1], rec[3],
                                  (uint16_t)rec[1]);
}

/* The real-valued estimate QL diag(cx) QR^T (test code: doubles are fine here). */
static void estimate(const lrt_lowrank *acc, double *out)
{
    const unsigned r = acc->cfg.rank;
    unsigned i, j, k;
    for (i = 0; i < acc->n; i++) {
        for (j = 0; j < acc->m; j++) {
            double s = 0.0;
            for (k = 0; k < r; k++)
                s += (double)acc->ql[i * r + k] * (double)acc->cx[k] * (double)acc->qr[j * r + k];
            out[(size_t)i * acc->m + j] = ldexp(s, acc->ql_exp + acc->qr_exp + acc->cx_exp);
        }
    }
}

int main(void)
{
    lrt_lowrank acc;
    lrt_lowrank_config cfg;
    lrt_mnorm mn;
    int16_t *state = NULL;
    int32_t *work = NULL;
    int8_t *u = NULL, *v = NULL;
    int16_t *delta = NULL, *sum_buf = NULL;
    int32_t *block = NULL;
    lrt_lowrank_sum sum;
    int have = 0;
    int32_t *tape = NULL;
    size_t tape_len = 0, tape_cap = 0, state_size = 0, work_size = 0;
    char cmd[8];
    unsigned i, k;

    lrt_mnorm_init(&mn);
    while (scanf("%7s", cmd) == 1) {
        if (cmd[0] == 'Q') break;
        switch (cmd[0]) {
        case 'I': {
            uint16_t n = (uint16_t)rd(), m = (uint16_t)rd();
            size_t ss, ws;
            int rc;
            cfg.rank = (uint8_t)rd();
            cfg.mode = (uint8_t)rd();
            cfg.maxnorm = (uint8_t)rd();
            cfg.batch_pow2 = (uint8_t)rd();
            cfg.max_block = (uint8_t)rd();
            cfg.rho_min_q16 = (uint32_t)rd();
            cfg.lr_q24 = (uint32_t)rd();
            cfg.discount_q16 = (uint32_t)rd();
            cfg.b_cap = (uint16_t)rd();
            cfg.maxnorm_beta_q30 = (uint32_t)rd();
            cfg.seed = (uint32_t)rd();
            free(state);
            free(work);
            free(u);
            free(v);
            free(delta);
            free(sum_buf);
            free(block);
            ss = lrt_lowrank_state_size(n, m, cfg.rank);
            ws = lrt_lowrank_work_size(cfg.rank, cfg.max_block);
            if (ss != LRT_LOWRANK_STATE_SIZE(n, m, cfg.rank) ||
                ws != LRT_LOWRANK_WORK_SIZE(cfg.rank, cfg.max_block))
                fail("size-macro", 0);
            /* exact sizes, so ASan catches any access past the documented buffers */
            state = malloc(ss);
            work = malloc(ws);
            u = malloc(n ? n : 1);
            v = malloc(m ? m : 1);
            delta = malloc(sizeof(int16_t) * (m ? m : 1));
            rc = lrt_lowrank_init(&acc, &cfg, n, m, state, ss, work, ws);
            if (lrt_lowrank_sum_size(n, m) != LRT_LOWRANK_SUM_SIZE(n, m))
                fail("sum-size-macro", 0);
            sum_buf = malloc(lrt_lowrank_sum_size(n, m));
            block = malloc(sizeof(int32_t) * ((size_t)n * n + (size_t)n * m));
            if (rc == 0 &&
                lrt_lowrank_sum_init(&sum, n, m, sum_buf, lrt_lowrank_sum_size(n, m)) != 0)
                fail("sum-init", 0);
            printf("init %d %lu %lu\n", rc, (unsigned long)ss, (unsigned long)ws);
            tape_len = 0;
            state_size = ss;
            work_size = ws;
            have = rc == 0;
            break;
        }
        case 'S': { /* recorded as the block step it is */
            int ue = (int)rd(), off = (int)rd(), ve = (int)rd(), rc;
            int32_t *rec;
            if (!have) fail("no-init", 0);
            if (off > 256 || off < -256) fail("v-offset", off);
            rec = tape_add(&tape, &tape_len, &tape_cap, 4u + acc.n + acc.m);
            rec[0] = 'B';
            rec[1] = 1;
            rec[2] = ue;
            rec[3] = ve;
            for (i = 0; i < acc.n; i++) rec[4 + i] = (int32_t)rd();
            for (i = 0; i < acc.m; i++) rec[4 + acc.n + i] = (int32_t)rd() + off;
            rc = play(&acc, rec);
            if (rc < 0) printf("step %d\n", rc);
            break;
        }
        case 'E':
            tape_add(&tape, &tape_len, &tape_cap, 1)[0] = 'E';
            lrt_lowrank_end_sample(&acc);
            break;
        case 'B': {
            unsigned kk = (unsigned)rd();
            int le = (int)rd(), re = (int)rd(), rc;
            size_t len = (size_t)(acc.n + acc.m) * kk;
            int32_t *rec;
            if (!have) fail("no-init", 0);
            rec = tape_add(&tape, &tape_len, &tape_cap, 4u + len);
            rec[0] = 'B';
            rec[1] = (int32_t)kk;
            rec[2] = le;
            rec[3] = re;
            for (i = 0; i < len; i++) rec[4 + i] = (int32_t)rd();
            rc = play(&acc, rec);
            if (rc < 0) printf("step %d\n", rc);
            break;
        }
        case 'W': {
            long seeds = rd(), sd;
            size_t nm = (size_t)acc.n * acc.m, j;
            double *mean = calloc(nm, sizeof(double)), *est = malloc(nm * sizeof(double));
            double sq = 0.0, mm = 0.0;
            lrt_lowrank_config c2 = acc.cfg;
            for (sd = 0; sd < seeds; sd++) {
                size_t pos = 0;
                c2.seed = (uint32_t)sd;
                if (lrt_lowrank_init(&acc, &c2, acc.n, acc.m, state, state_size, work,
                                     work_size) != 0)
                    fail("replay-init", 0);
                while (pos < tape_len) {
                    int rc = play(&acc, tape + pos);
                    if (rc < 0) fail("replay-step", rc);
                    pos += tape[pos] == 'E' ? 1u : 4u + (size_t)(acc.n + acc.m) * (size_t)tape[pos + 1];
                }
                estimate(&acc, est);
                for (j = 0; j < nm; j++) {
                    mean[j] += est[j];
                    sq += est[j] * est[j];
                }
            }
            for (j = 0; j < nm; j++) {
                mean[j] /= (double)seeds;
                mm += mean[j] * mean[j];
            }
            printf("wmean");
            for (j = 0; j < nm; j++) printf(" %.17g", mean[j]);
            printf("\nwvar %.17g\n", sq / (double)seeds - mm);
            free(mean);
            free(est);
            break;
        }
        case 'R': lrt_lowrank_reset(&acc); break;
        case 'X': lrt_lowrank_defer(&acc); break;
        case 'D': {
            const unsigned q = acc.cfg.rank;
            printf("state %ld %ld %ld %lu %lu %lu %lu\n", (long)acc.ql_exp, (long)acc.qr_exp,
                   (long)acc.cx_exp, (unsigned long)acc.b_eff_q16, (unsigned long)acc.steps,
                   (unsigned long)acc.applied, (unsigned long)acc.rng);
            printf("cx");
            for (k = 0; k < acc.cfg.rank; k++) printf(" %lu", (unsigned long)acc.cx[k]);
            printf("\nql");
            for (i = 0; i < acc.n * q; i++) printf(" %d", acc.ql[i]);
            printf("\nqr");
            for (i = 0; i < acc.m * q; i++) printf(" %d", acc.qr[i]);
            printf("\n");
            break;
        }
        case 'F': {
            lrt_lowrank_plan plan;
            int rc = lrt_lowrank_flush_prepare(&acc, (int)rd(), &plan);
            printf("plan %d %ld %lu %lu %ld %lu %ld %lu %ld", rc, (long)plan.shift,
                   (unsigned long)plan.min_nonzero, (unsigned long)plan.lr_eff.m,
                   (long)plan.lr_eff.e, (unsigned long)plan.div_l.m, (long)plan.div_l.e,
                   (unsigned long)plan.div_r.m, (long)plan.div_r.e);
            for (k = 0; k < acc.cfg.rank; k++) printf(" %ld", (long)plan.w[k]);
            printf("\ncount %lu %lu\ndelta",
                   (unsigned long)lrt_lowrank_count_nonzero(&acc, &plan, 0),
                   (unsigned long)lrt_lowrank_count_nonzero(&acc, &plan, plan.min_nonzero));
            for (i = 0; i < acc.n; i++) {
                lrt_lowrank_delta_row(&acc, &plan, (uint16_t)i, delta);
                for (k = 0; k < acc.m; k++) printf(" %d", delta[k]);
            }
            printf("\n");
            break;
        }
        case 'C': {
            lrt_lowrank_plan plan;
            printf("check %d\n", lrt_lowrank_flush_check(&acc, (int)rd(), &plan));
            break;
        }
        case 'V': {
            uint8_t q = (uint8_t)rd();
            int32_t a[LRT_LOWRANK_MAX_CORE * LRT_LOWRANK_MAX_CORE];
            int32_t vm[LRT_LOWRANK_MAX_CORE * LRT_LOWRANK_MAX_CORE];
            uint32_t sigma[LRT_LOWRANK_MAX_CORE];
            int rc;
            if (q > LRT_LOWRANK_MAX_CORE) fail("svd-q", q);
            for (i = 0; i < (unsigned)q * q; i++) a[i] = (int32_t)rd();
            rc = lrt_lowrank_svd(a, q, sigma, vm);
            printf("svd %d\ns", rc);
            if (rc >= 0) {
                for (i = 0; i < q; i++) printf(" %lu", (unsigned long)sigma[i]);
                printf("\nu");
                for (i = 0; i < (unsigned)q * q; i++) printf(" %ld", (long)a[i]);
                printf("\nv");
                for (i = 0; i < (unsigned)q * q; i++) printf(" %ld", (long)vm[i]);
            }
            printf("\n");
            break;
        }
        case 'M': {
            uint32_t mant = (uint32_t)rd();
            lrt_ufx d = lrt_mnorm_update(&mn, lrt_ufx_make(mant, (int32_t)rd()));
            printf("div %lu %ld\n", (unsigned long)d.m, (long)d.e);
            break;
        }
        case 'N': {
            int bits = (int)rd(), xe = (int)rd(), oe = (int)rd(), rc;
            uint32_t len = (uint32_t)rd();
            if (bits == 8) {
                int8_t *x = malloc(len ? len : 1);
                for (i = 0; i < len; i++) x[i] = (int8_t)rd();
                rc = lrt_mnorm_s8(&mn, x, xe, len, x, oe);
                printf("mn %d", rc);
                for (i = 0; i < len; i++) printf(" %d", x[i]);
                free(x);
            } else {
                int32_t *x = malloc(sizeof(int32_t) * (len ? len : 1));
                for (i = 0; i < len; i++) x[i] = (int32_t)rd();
                rc = lrt_mnorm_s32(&mn, x, xe, len, x, oe);
                printf("mn %d", rc);
                for (i = 0; i < len; i++) printf(" %ld", (long)x[i]);
                free(x);
            }
            printf("\n");
            break;
        }
        case 'U': {
            /* a = mant1 * 2^e1, b = mant2 * 2^e2: print a*b, a/b, a+b, a-b, sqrt(a), cmp */
            uint64_t m1 = (uint64_t)rd();
            int32_t e1 = (int32_t)rd();
            uint64_t m2 = (uint64_t)rd();
            int32_t e2 = (int32_t)rd();
            lrt_ufx a = lrt_ufx_make(m1, e1), b = lrt_ufx_make(m2, e2), r[5];
            r[0] = lrt_ufx_mul(a, b);
            r[1] = lrt_ufx_div(a, b);
            r[2] = lrt_ufx_add(a, b);
            r[3] = lrt_ufx_sub(a, b);
            r[4] = lrt_ufx_sqrt(a);
            printf("ufx");
            for (k = 0; k < 5; k++) printf(" %lu %ld", (unsigned long)r[k].m, (long)r[k].e);
            printf(" %d %lu\n", lrt_ufx_cmp(a, b), (unsigned long)lrt_isqrt64(m1));
            break;
        }
        case 'A': {
            const int xe = (int)rd();
            int32_t *x = malloc(sizeof(int32_t) * sum.len);
            if (!have) fail("no-init", 0);
            for (i = 0; i < sum.len; i++) x[i] = (int32_t)rd();
            lrt_lowrank_sum_add(&sum, x, xe);
            free(x);
            break;
        }
        case 'P': {
            const int le = (int)rd();
            if (!have) fail("no-init", 0);
            printf("sumstep %d\n",
                   lrt_lowrank_sum_step(&sum, &acc, le, block,
                                        (size_t)acc.n * acc.n + (size_t)acc.n * acc.m));
            break;
        }
        case 'G':
            printf("sum %ld %u", (long)sum.exp, (unsigned)sum.max_abs);
            for (i = 0; i < sum.len; i++) printf(" %d", sum.sum[i]);
            printf("\n");
            break;
        default: fprintf(stderr, "driver: unknown command %s\n", cmd); return 2;
        }
    }
    free(state);
    free(work);
    free(u);
    free(v);
    free(delta);
    free(sum_buf);
    free(block);
    free(tape);
    play(&acc, NULL);
    return 0;
}
