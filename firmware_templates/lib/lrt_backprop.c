/* lrt_backprop.c - integer backward kernels (see lrt_backprop.h for the number formats). */
#include "lrt_backprop.h"

#include "lrt_kernels.h"
#if LRT_HAVE_SIMD
#include <arm_acle.h>
#endif

#include <string.h>

/* round(2^30 * 2^(-k/32)), k = 0..32 */
static const uint32_t exp2_neg_q30[33] = {
    1073741824u, 1050733751u, 1028218693u, 1006186087u, 984625594u, 963527098u, 942880699u,
    922676710u,  902905651u,  883558244u,  864625413u,  846098274u, 827968132u, 810226483u,
    792865000u,  775875538u,  759250125u,  742980960u,  727060411u, 711481005u, 696235434u,
    681316545u,  666717336u,  652430958u,  638450708u,  624770026u, 611382493u, 598281827u,
    585461881u,  572916640u,  560640218u,  548626854u,  536870912u,
};
#define LOG2E_Q28 387270501 /* log2(e) * 2^28 */

void lrt_bp_geom_of(const lrt_layer *l, lrt_bp_geom *g)
{
    g->in_h = l->in_h;
    g->in_w = l->in_w;
    g->in_c = l->in_c;
    g->out_h = l->out_h;
    g->out_w = l->out_w;
    g->out_c = l->out_c;
    g->kh = l->kernel_h;
    g->kw = l->kernel_w;
    g->sh = l->stride_h;
    g->sw = l->stride_w;
    g->pt = l->pad_top;
    g->pl = l->pad_left;
    if (l->kind == LRT_LAYER_DENSE) {
        /* A dense layer is a conv whose single output pixel sees the whole input: same
         * [n][in_h*in_w*in_c] weight layout, no separate code path to test. */
        g->kh = l->in_h;
        g->kw = l->in_w;
        g->out_h = 1;
        g->out_w = 1;
        g->sh = 1;
        g->sw = 1;
        g->pt = 0;
        g->pl = 0;
    }
}

uint32_t lrt_bp_layer_m(const lrt_layer *l)
{
    if (l->kind == LRT_LAYER_CONV2D) {
        return (uint32_t)l->kernel_h * l->kernel_w * l->in_c;
    }
    if (l->kind == LRT_LAYER_DENSE) {
        return lrt_layer_in_size(l);
    }
    return 0;
}

int lrt_bp_layer_check(const lrt_layer *l)
{
    lrt_bp_geom g;
    if (l == NULL) {
        return LRT_ERR_ARG;
    }
    lrt_bp_geom_of(l, &g);
    switch (l->kind) {
    case LRT_LAYER_FLATTEN: return LRT_OK;
    case LRT_LAYER_MAXPOOL2D:
        return (g.kh >= 1 && g.kw >= 1 && g.sh >= 1 && g.sw >= 1) ? LRT_OK : LRT_ERR_UNSUPPORTED;
    case LRT_LAYER_BATCHNORM:
        if (l->bn == NULL || l->in_exp == LRT_EXP_NONE || l->out_exp == LRT_EXP_NONE ||
            l->input_offset < -127 || l->input_offset > 128 ||
            (uint32_t)l->out_h * l->out_w > LRT_BP_MAX_PIXELS) {
            return LRT_ERR_UNSUPPORTED;
        }
        return LRT_OK;
    case LRT_LAYER_CONV2D:
    case LRT_LAYER_DENSE: break;
    default: return LRT_ERR_UNSUPPORTED;
    }
    if (l->in_exp == LRT_EXP_NONE || l->out_exp == LRT_EXP_NONE || l->weight_exp == LRT_EXP_NONE ||
        l->bias_exp == LRT_EXP_NONE) {
        return LRT_ERR_UNSUPPORTED;
    }
    if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1) {
        return LRT_ERR_UNSUPPORTED;
    }
    if (l->input_offset < -127 || l->input_offset > 128) {
        return LRT_ERR_UNSUPPORTED; /* zero point outside int8 */
    }
    if ((uint32_t)g.out_h * g.out_w > LRT_BP_MAX_PIXELS) {
        return LRT_ERR_UNSUPPORTED;
    }
    if ((uint32_t)g.kh * g.kw * g.out_c > LRT_BP_MAX_DX_TERMS) {
        return LRT_ERR_UNSUPPORTED;
    }
    return LRT_OK;
}

int64_t lrt_bp_round_shift(int64_t v, unsigned s)
{
    int64_t half;
    if (s == 0) {
        return v;
    }
    if (s > 63) {
        return 0;
    }
    half = (int64_t)1 << (s - 1);
    if (v >= 0) {
        return (int64_t)(((uint64_t)v + (uint64_t)half) >> s);
    }
    return -(int64_t)(((uint64_t)(-v) + (uint64_t)half) >> s);
}

unsigned lrt_bp_bfp_shift(uint64_t max_abs)
{
    unsigned s = 0;
    while (s < 63) {
        uint64_t half = s ? ((uint64_t)1 << (s - 1)) : 0;
        if (((max_abs + half) >> s) <= LRT_BP_GRAD_MAX) {
            break;
        }
        s++;
    }
    return s;
}

static int8_t sat_grad(int64_t v)
{
    return (int8_t)LRT_CLAMP(v, -LRT_BP_GRAD_MAX, LRT_BP_GRAD_MAX);
}

/* exp(d * 2^e) = v * 2^-n, v in Q30 within [2^29, 2^30], d <= 0; n = 255 means 0. */
static void exp_parts(int32_t d, int e, uint32_t *v, uint32_t *n)
{
    uint64_t y, u, fr;
    uint32_t idx, rem;
    *v = 1u << 30;
    *n = 0;
    if (d >= 0) {
        return;
    }
    /* exp(x) = 2^(x log2 e); u = -x log2 e in Q24. */
    y = (uint64_t)(-(int64_t)d) * (uint64_t)LOG2E_Q28;
    if (e >= 4) {
        /* u >= 2^40 underflows anything we keep; the check also keeps the shift exact. */
        if (e - 4 > 39 || (y >> (40 - (e - 4))) != 0) {
            *n = 255;
            return;
        }
        u = y << (e - 4);
    } else {
        u = (uint64_t)lrt_bp_round_shift((int64_t)y, (unsigned)(4 - e));
    }
    if ((u >> 24) > 200) {
        *n = 255;
        return;
    }
    *n = (uint32_t)(u >> 24);
    fr = u & 0xFFFFFFu;
    idx = (uint32_t)(fr >> 19);
    rem = (uint32_t)(fr & 0x7FFFFu);
    *v = (uint32_t)(exp2_neg_q30[idx] -
                    ((((uint64_t)(exp2_neg_q30[idx] - exp2_neg_q30[idx + 1])) * rem + (1u << 18)) >>
                     19));
}

uint32_t lrt_bp_exp_q30(int32_t d, int e)
{
    uint32_t v, n;
    exp_parts(d, e, &v, &n);
    return n > 63 ? 0 : (uint32_t)lrt_bp_round_shift((int64_t)v, n);
}

static unsigned bit_length(uint64_t v)
{
    unsigned n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* exp(d * 2^e) in Q(qbits), qbits <= 62. */
static uint64_t exp_q(int32_t d, int e, unsigned qbits)
{
    uint32_t v, n;
    exp_parts(d, e, &v, &n);
    if (n + 30 > qbits) {
        unsigned k = n + 30 - qbits;
        return k > 63 ? 0 : (uint64_t)lrt_bp_round_shift((int64_t)v, k);
    }
    return (uint64_t)v << (qbits - 30 - n);
}

/* round(num * 2^t / den), num <= den < 2^63, by binary long division (no 128-bit product). */
static uint64_t ratio_pow2(uint64_t num, uint64_t den, unsigned t)
{
    uint64_t q = num / den, rem = num % den;
    unsigned i;
    for (i = 0; i < t; i++) {
        rem <<= 1;
        q <<= 1;
        if (rem >= den) {
            rem -= den;
            q |= 1u;
        }
    }
    return q + (rem >= den - rem); /* half up: 2 rem >= den */
}

int lrt_bp_softmax_xent(const int8_t *logits, uint16_t n, int32_t zero_point, int logit_exp,
                        uint16_t label, int8_t *dz, int16_t *dz_exp, uint16_t *prob_q15)
{
    uint64_t sum = 0, nmax = 0;
    int32_t qmax = -128;
    uint16_t i;
    int t;
    /* Probabilities in Q(qbits) with the largest exp = 1: the sum stays below 2^62, and the
     * small probabilities keep their relative precision (they carry the gradient of a
     * confident, correct prediction). */
    unsigned qbits;
    (void)zero_point; /* cancels in q_j - q_max */
    if (logits == NULL || dz == NULL || dz_exp == NULL || n == 0 || label >= n) {
        return LRT_ERR_ARG;
    }
    qbits = 62u - bit_length(n);
    for (i = 0; i < n; i++) {
        qmax = LRT_MAX(qmax, (int32_t)logits[i]);
    }
    for (i = 0; i < n; i++) {
        sum += exp_q((int32_t)logits[i] - qmax, logit_exp, qbits);
    }
    /* Numerators of |dz|: p_j for j != label, 1 - p_label = sum_{j != label} p_j. */
    for (i = 0; i < n; i++) {
        uint64_t e = exp_q((int32_t)logits[i] - qmax, logit_exp, qbits);
        uint64_t num = (i == label) ? sum - e : e;
        nmax = LRT_MAX(nmax, num);
        if (prob_q15 != NULL) {
            prob_q15[i] = (uint16_t)ratio_pow2(e, sum, 15);
        }
    }
    if (nmax == 0) {
        memset(dz, 0, n);
        *dz_exp = 0;
        return LRT_OK;
    }
    /* Largest t with round(nmax * 2^t / sum) <= 127: start where the ratio is >= 128. */
    t = (int)bit_length(sum) - (int)bit_length(nmax) + 8;
    while (t > 0 && ratio_pow2(nmax, sum, (unsigned)t) > LRT_BP_GRAD_MAX) {
        t--;
    }
    for (i = 0; i < n; i++) {
        uint64_t e = exp_q((int32_t)logits[i] - qmax, logit_exp, qbits);
        uint64_t num = (i == label) ? sum - e : e;
        int32_t g = (int32_t)ratio_pow2(num, sum, (unsigned)t);
        dz[i] = (int8_t)((i == label) ? -g : g);
    }
    *dz_exp = (int16_t)-t;
    return LRT_OK;
}

uint32_t lrt_bp_act_mask(const lrt_layer *l, const int8_t *y, int8_t *g)
{
    uint32_t i, n = lrt_layer_out_size(l), nz = 0;
    for (i = 0; i < n; i++) {
        if (y[i] <= l->act_min || y[i] >= l->act_max) {
            g[i] = 0;
        }
        nz += (g[i] != 0);
    }
    return nz;
}

/* dx at input element (iy, ix, ci): sum over the taps (ky, kx) that map it onto an output
 * pixel, and over output channels. */
static int32_t dx_sum(const lrt_bp_geom *g, const int8_t *w, const int8_t *dz, uint32_t m,
                      uint32_t iy, uint32_t ix, uint32_t ci)
{
    int32_t acc = 0;
    uint32_t ky, kx, o;
    for (ky = 0; ky < g->kh; ky++) {
        int32_t ty = (int32_t)iy + g->pt - (int32_t)ky;
        uint32_t oy;
        if (ty < 0 || ty % g->sh) {
            continue;
        }
        oy = (uint32_t)ty / g->sh;
        if (oy >= g->out_h) {
            continue;
        }
        for (kx = 0; kx < g->kw; kx++) {
            int32_t tx = (int32_t)ix + g->pl - (int32_t)kx;
            uint32_t ox;
            const int8_t *dzp, *wp;
            if (tx < 0 || tx % g->sw) {
                continue;
            }
            ox = (uint32_t)tx / g->sw;
            if (ox >= g->out_w) {
                continue;
            }
            dzp = dz + ((size_t)oy * g->out_w + ox) * g->out_c;
            wp = w + ((size_t)ky * g->kw + kx) * g->in_c + ci;
            for (o = 0; o < g->out_c; o++) {
                acc += (int32_t)dzp[o] * wp[(size_t)o * m];
            }
        }
    }
    return acc;
}

int lrt_bp_input_grad(const lrt_layer *l, const int8_t *w, const int8_t *dz, int16_t dz_exp,
                      int8_t *dx, int16_t *dx_exp)
{
    lrt_bp_geom g;
    uint32_t m, iy, ix, ci;
    uint64_t amax = 0;
    unsigned s;
    int8_t *out;
    if (l == NULL || w == NULL || dz == NULL || dx == NULL || dx_exp == NULL ||
        (l->kind != LRT_LAYER_CONV2D && l->kind != LRT_LAYER_DENSE)) {
        return LRT_ERR_ARG;
    }
    lrt_bp_geom_of(l, &g);
    m = lrt_bp_layer_m(l);
    for (iy = 0; iy < g.in_h; iy++) {
        for (ix = 0; ix < g.in_w; ix++) {
            for (ci = 0; ci < g.in_c; ci++) {
                int32_t v = dx_sum(&g, w, dz, m, iy, ix, ci);
                uint64_t a = (uint64_t)(v < 0 ? -(int64_t)v : v);
                amax = LRT_MAX(amax, a);
            }
        }
    }
    s = lrt_bp_bfp_shift(amax);
    out = dx;
    for (iy = 0; iy < g.in_h; iy++) {
        for (ix = 0; ix < g.in_w; ix++) {
            for (ci = 0; ci < g.in_c; ci++) {
                int32_t v = amax ? dx_sum(&g, w, dz, m, iy, ix, ci) : 0;
                *out++ = sat_grad(lrt_bp_round_shift(v, s));
            }
        }
    }
    *dx_exp = (int16_t)(dz_exp + l->weight_exp + (int)s);
    return LRT_OK;
}

uint32_t lrt_bp_input_grad_work_size(const lrt_layer *l)
{
    lrt_bp_geom g;
    if (l == NULL || (l->kind != LRT_LAYER_CONV2D && l->kind != LRT_LAYER_DENSE)) {
        return 0;
    }
    lrt_bp_geom_of(l, &g);
    return LRT_BP_INPUT_GRAD_WORK_SIZE(g.kh, g.in_w, g.in_c, lrt_layer_in_size(l));
}

/* dst[j] += d * w[j] over a run of n int8 (|d| <= 127): the inner loop of the sparse input
 * gradient and of the whole-layer weight gradient. The runs are short (kw * in_c), so four
 * at a time on a Cortex-M; with the SIMD kernels one word of w feeds four SMLAxy (d in the
 * low half), the same integers. On the host a plain loop, which the compiler vectorizes. */
static void scatter_run(int32_t *dst, const int8_t *w, uint32_t n, int32_t d)
{
    uint32_t j = 0;
#if LRT_HAVE_SIMD
    for (; j + 4 <= n; j += 4) {
        uint32_t wv;
        int32_t w02, w13, a0 = dst[j], a1 = dst[j + 1], a2 = dst[j + 2], a3 = dst[j + 3];
        memcpy(&wv, w + j, 4); /* one LDR: unaligned word loads are allowed on these cores */
        w02 = (int32_t)__sxtb16(wv);
        w13 = (int32_t)__sxtb16((wv >> 8) | (wv << 24));
        dst[j] = __smlabb(w02, d, a0);
        dst[j + 1] = __smlabb(w13, d, a1);
        dst[j + 2] = __smlatb(w02, d, a2);
        dst[j + 3] = __smlatb(w13, d, a3);
    }
#elif defined(__arm__)
    for (; j + 4 <= n; j += 4) {
        dst[j] += d * w[j];
        dst[j + 1] += d * w[j + 1];
        dst[j + 2] += d * w[j + 2];
        dst[j + 3] += d * w[j + 3];
    }
#endif
    for (; j < n; j++) {
        dst[j] += d * w[j];
    }
}

typedef struct {
    uint8_t *mag;    /* dx as magnitudes floor(|v| / 2^t) */
    uint32_t *signs; /* bit i: v_i < 0 */
    uint32_t amax;   /* max |v| so far */
    unsigned t;
} dx_store;

/* Move finished input row iy (ring slot row[], len values) into the store and clear it. */
static void finish_row(dx_store *st, int32_t *row, uint32_t len, uint32_t base)
{
    uint32_t j, a, rmax = 0;
    unsigned t;
    for (j = 0; j < len; j++) {
        a = (uint32_t)(row[j] < 0 ? -row[j] : row[j]);
        rmax = LRT_MAX(rmax, a);
    }
    if (rmax > st->amax) {
        st->amax = rmax;
        t = bit_length(rmax) > 8 ? bit_length(rmax) - 8u : 0u;
        if (t > st->t) {
            for (j = 0; j < base; j++) { /* rows stored so far */
                st->mag[j] = (uint8_t)(st->mag[j] >> (t - st->t));
            }
            st->t = t;
        }
    }
    for (j = 0; j < len; j++) {
        const int32_t v = row[j];
        st->mag[base + j] = (uint8_t)((uint32_t)(v < 0 ? -v : v) >> st->t);
        if (v < 0) {
            st->signs[(base + j) >> 5] |= 1u << ((base + j) & 31u);
        }
        row[j] = 0;
    }
}

int lrt_bp_input_grad_sparse(const lrt_layer *l, const int8_t *w, const int8_t *dz, int16_t dz_exp,
                             int8_t *dx, int16_t *dx_exp, void *work, uint32_t work_size)
{
    lrt_bp_geom g;
    dx_store st;
    uint32_t m, rowlen, n, i, oy, ox, done = 0;
    int32_t *ring;
    unsigned s;
    if (l == NULL || w == NULL || dz == NULL || dx == NULL || dx_exp == NULL || work == NULL ||
        ((uintptr_t)work & 3u) != 0 ||
        (l->kind != LRT_LAYER_CONV2D && l->kind != LRT_LAYER_DENSE) ||
        work_size < lrt_bp_input_grad_work_size(l)) {
        return LRT_ERR_ARG;
    }
    lrt_bp_geom_of(l, &g);
    m = lrt_bp_layer_m(l);
    rowlen = (uint32_t)g.in_w * g.in_c;
    n = lrt_layer_in_size(l);
    ring = (int32_t *)work;
    st.signs = (uint32_t *)(ring + (uint32_t)g.kh * rowlen);
    st.mag = (uint8_t *)dx;
    st.amax = 0;
    st.t = 0;
    memset(work, 0, lrt_bp_input_grad_work_size(l));
    for (oy = 0; oy < g.out_h; oy++) {
        const int32_t row0 = (int32_t)(oy * g.sh) - g.pt;
        /* rows above this output row's window get nothing more */
        while ((int32_t)done < row0 && done < g.in_h) {
            finish_row(&st, ring + (done % g.kh) * rowlen, rowlen, done * rowlen);
            done++;
        }
        for (ox = 0; ox < g.out_w; ox++) {
            const int8_t *dzp = dz + ((size_t)oy * g.out_w + ox) * g.out_c;
            const int32_t ix0 = (int32_t)(ox * g.sw) - g.pl;
            const uint32_t kx0 = ix0 < 0 ? (uint32_t)-ix0 : 0u;
            const uint32_t kx1 = (uint32_t)LRT_MIN((int32_t)g.kw, (int32_t)g.in_w - ix0);
            uint32_t o, ky;
            if (kx0 >= kx1) {
                continue;
            }
            for (o = 0; o < g.out_c; o++) {
                const int32_t d = dzp[o];
                if (d == 0) {
                    continue; /* the sparsity: masked and pooled gradients are mostly 0 */
                }
                for (ky = 0; ky < g.kh; ky++) {
                    const int32_t iy = row0 + (int32_t)ky;
                    if (iy < 0 || iy >= (int32_t)g.in_h) {
                        continue;
                    }
                    scatter_run(ring + ((uint32_t)iy % g.kh) * rowlen +
                                    (uint32_t)(ix0 + (int32_t)kx0) * g.in_c,
                                w + (size_t)o * m + ((size_t)ky * g.kw + kx0) * g.in_c,
                                (kx1 - kx0) * g.in_c, d);
                }
            }
        }
    }
    while (done < g.in_h) {
        finish_row(&st, ring + (done % g.kh) * rowlen, rowlen, done * rowlen);
        done++;
    }
    s = lrt_bp_bfp_shift(st.amax);
    for (i = 0; i < n; i++) {
        uint32_t a = st.mag[i];
        if (s > st.t) {
            a = (a + (1u << (s - st.t - 1u))) >> (s - st.t);
        }
        dx[i] = (int8_t)((st.signs[i >> 5] >> (i & 31u)) & 1u ? -(int32_t)a : (int32_t)a);
    }
    *dx_exp = (int16_t)(dz_exp + l->weight_exp + (int)s);
    return LRT_OK;
}

int lrt_bp_maxpool(const lrt_layer *l, const int8_t *x, const int8_t *g_out, int8_t *g_in)
{
    lrt_bp_geom g;
    uint32_t oy, ox, c, ky, kx;
    if (l == NULL || x == NULL || g_out == NULL || g_in == NULL || l->kind != LRT_LAYER_MAXPOOL2D) {
        return LRT_ERR_ARG;
    }
    lrt_bp_geom_of(l, &g);
    memset(g_in, 0, lrt_layer_in_size(l));
    for (oy = 0; oy < g.out_h; oy++) {
        for (ox = 0; ox < g.out_w; ox++) {
            for (c = 0; c < g.out_c; c++) {
                int8_t go = g_out[((size_t)oy * g.out_w + ox) * g.out_c + c];
                int32_t best = -129;
                size_t pos = 0;
                if (go == 0) {
                    continue;
                }
                for (ky = 0; ky < g.kh; ky++) {
                    int32_t iy = (int32_t)(oy * g.sh + ky) - g.pt;
                    if (iy < 0 || iy >= (int32_t)g.in_h) {
                        continue;
                    }
                    for (kx = 0; kx < g.kw; kx++) {
                        int32_t ix = (int32_t)(ox * g.sw + kx) - g.pl;
                        size_t idx;
                        if (ix < 0 || ix >= (int32_t)g.in_w) {
                            continue;
                        }
                        idx = ((size_t)iy * g.in_w + (size_t)ix) * g.in_c + c;
                        if (x[idx] > best) { /* strict: the first maximum wins ties */
                            best = x[idx];
                            pos = idx;
                        }
                    }
                }
                if (best > -129) {
                    g_in[pos] = sat_grad((int32_t)g_in[pos] + go);
                }
            }
        }
    }
    return LRT_OK;
}

int32_t lrt_bp_weight_grad_cell(const lrt_layer *l, const int8_t *x, const int8_t *dz, uint16_t o,
                                uint32_t j, uint32_t *nz_terms)
{
    lrt_bp_geom g;
    uint32_t ky, kx, ci, oy, ox, nz = 0;
    int32_t zp = -l->input_offset, acc = 0;
    lrt_bp_geom_of(l, &g);
    ci = j % g.in_c;
    kx = (j / g.in_c) % g.kw;
    ky = j / ((uint32_t)g.in_c * g.kw);
    for (oy = 0; oy < g.out_h; oy++) {
        int32_t iy = (int32_t)(oy * g.sh + ky) - g.pt;
        const int8_t *xrow, *dzrow;
        if (iy < 0 || iy >= (int32_t)g.in_h) {
            continue;
        }
        xrow = x + (size_t)iy * g.in_w * g.in_c + ci;
        dzrow = dz + (size_t)oy * g.out_w * g.out_c + o;
        for (ox = 0; ox < g.out_w; ox++) {
            int32_t ix = (int32_t)(ox * g.sw + kx) - g.pl;
            int32_t d, a;
            if (ix < 0 || ix >= (int32_t)g.in_w) {
                continue;
            }
            d = dzrow[(size_t)ox * g.out_c];
            if (d == 0) {
                continue;
            }
            a = (int32_t)xrow[(size_t)ix * g.in_c] - zp;
            if (a == 0) {
                continue;
            }
            acc += d * a;
            nz++;
        }
    }
    if (nz_terms != NULL) {
        *nz_terms = nz;
    }
    return acc;
}

void lrt_bp_weight_grad(const lrt_layer *l, const int8_t *x, const int8_t *dz, int32_t *dw)
{
    uint32_t m = lrt_bp_layer_m(l), j;
    uint16_t o;
    for (o = 0; o < l->out_c; o++) {
        int active = lrt_bp_channel_active(l, dz, o);
        for (j = 0; j < m; j++) {
            dw[(size_t)o * m + j] = active ? lrt_bp_weight_grad_cell(l, x, dz, o, j, NULL) : 0;
        }
    }
}

int32_t lrt_bp_bias_grad(const lrt_layer *l, const int8_t *dz, uint16_t o)
{
    uint32_t p, n = lrt_layer_out_size(l) / l->out_c;
    int32_t acc = 0;
    for (p = 0; p < n; p++) {
        acc += dz[(size_t)p * l->out_c + o];
    }
    return acc;
}

void lrt_bp_bias_grads(const lrt_layer *l, const int8_t *dz, int32_t *out)
{
    const uint16_t n = l->out_c;
    uint32_t p, pixels = lrt_layer_out_size(l) / n;
    uint16_t o;
    memset(out, 0, sizeof(int32_t) * n);
    for (p = 0; p < pixels; p++, dz += n) {
        for (o = 0; o < n; o++) {
            out[o] += dz[o];
        }
    }
}

int lrt_bp_channel_active(const lrt_layer *l, const int8_t *dz, uint16_t o)
{
    uint32_t p, n = lrt_layer_out_size(l) / l->out_c;
    for (p = 0; p < n; p++) {
        if (dz[(size_t)p * l->out_c + o] != 0) {
            return 1;
        }
    }
    return 0;
}

void lrt_conv_gather_patch(const lrt_layer *l, const int8_t *x, uint16_t oy, uint16_t ox,
                           int8_t *patch)
{
    lrt_bp_geom g;
    uint32_t ky, kx;
    int8_t zp = (int8_t)(-l->input_offset);
    lrt_bp_geom_of(l, &g);
    for (ky = 0; ky < g.kh; ky++) {
        int32_t iy = (int32_t)((uint32_t)oy * g.sh + ky) - g.pt;
        for (kx = 0; kx < g.kw; kx++) {
            int32_t ix = (int32_t)((uint32_t)ox * g.sw + kx) - g.pl;
            if (iy < 0 || iy >= (int32_t)g.in_h || ix < 0 || ix >= (int32_t)g.in_w) {
                memset(patch, zp, g.in_c);
            } else {
                memcpy(patch, x + ((size_t)iy * g.in_w + (size_t)ix) * g.in_c, g.in_c);
            }
            patch += g.in_c;
        }
    }
}

/* dy * w_c scaled to the common exponent fmax - 16 (|result| < 2^30). */
static int32_t bn_dx_term(const lrt_bn *bn, int8_t dy, uint16_t c, int fmax)
{
    int32_t v = (int32_t)dy * bn->w[c];
    int sh = (int)bn->shift[c] - fmax + 16;
    if (sh >= 0) {
        return v * ((int32_t)1 << sh);
    }
    return (int32_t)lrt_bp_round_shift(v, (unsigned)-sh);
}

int lrt_bp_batchnorm(const lrt_layer *l, const int8_t *dy, int16_t dy_exp, int8_t *dx,
                     int16_t *dx_exp)
{
    uint32_t p, n_pix;
    uint16_t c;
    uint64_t amax = 0;
    int fmax = -128;
    unsigned s;
    if (l == NULL || dy == NULL || dx == NULL || dx_exp == NULL || l->kind != LRT_LAYER_BATCHNORM ||
        l->bn == NULL) {
        return LRT_ERR_ARG;
    }
    n_pix = (uint32_t)l->out_h * l->out_w;
    for (c = 0; c < l->out_c; c++) {
        if (l->bn->w[c] != 0) {
            fmax = LRT_MAX(fmax, (int)l->bn->shift[c]);
        }
    }
    if (fmax == -128) {
        memset(dx, 0, (size_t)n_pix * l->out_c);
        *dx_exp = dy_exp;
        return LRT_OK;
    }
    for (p = 0; p < n_pix; p++) {
        for (c = 0; c < l->out_c; c++) {
            int32_t v = bn_dx_term(l->bn, dy[(size_t)p * l->out_c + c], c, fmax);
            amax = LRT_MAX(amax, (uint64_t)(v < 0 ? -(int64_t)v : v));
        }
    }
    s = lrt_bp_bfp_shift(amax);
    for (p = 0; p < n_pix; p++) {
        for (c = 0; c < l->out_c; c++) {
            size_t k = (size_t)p * l->out_c + c;
            dx[k] = sat_grad(lrt_bp_round_shift(bn_dx_term(l->bn, dy[k], c, fmax), s));
        }
    }
    /* fmax is a TFLite shift (f + 1) */
    *dx_exp = (int16_t)(dy_exp + (fmax - 1) - 16 + l->out_exp - l->in_exp + (int)s);
    return LRT_OK;
}

int64_t lrt_bp_bn_gamma_sum(const lrt_layer *l, const int8_t *x, const int8_t *dy, uint16_t c)
{
    uint32_t p, n_pix = (uint32_t)l->out_h * l->out_w;
    int64_t acc = 0, mu = l->bn->mu[c];
    for (p = 0; p < n_pix; p++) {
        size_t k = (size_t)p * l->out_c + c;
        if (dy[k] != 0) {
            int64_t xi = (int64_t)x[k] + l->input_offset;
            acc += (int64_t)dy[k] * (xi * 65536 - mu);
        }
    }
    return acc;
}

uint32_t lrt_conv_wgrad_size(const lrt_layer *l)
{
    return 4u * l->out_c * lrt_bp_layer_m(l);
}

#define WGRAD_PATCH_MAX 32u  /* bytes of stack for the window of a small filter */
#define WGRAD_DSUM_CHUNK 32u /* channels whose dz sums one pass over the pixels gathers */

void lrt_conv_wgrad_s32(const lrt_layer *l, const int8_t *x, const int8_t *dz, int32_t *g)
{
    lrt_bp_geom geo;
    const uint32_t m = lrt_bp_layer_m(l);
    const int32_t off = l->input_offset; /* x - zp = x + input_offset */
    int8_t patch[WGRAD_PATCH_MAX];
    uint32_t oy, ox, ky, t;
    uint16_t o, o0, n;
    lrt_bp_geom_of(l, &geo);
    n = geo.out_c;
    memset(g, 0, sizeof(int32_t) * n * m);
    for (oy = 0; oy < geo.out_h; oy++) {
        const int32_t iy0 = (int32_t)(oy * geo.sh) - geo.pt;
        const uint32_t ky0 = iy0 < 0 ? (uint32_t)-iy0 : 0u;
        const uint32_t ky1 = LRT_MIN((uint32_t)geo.kh, (uint32_t)((int32_t)geo.in_h - iy0));
        for (ox = 0; ox < geo.out_w; ox++) {
            const int8_t *d = dz + ((size_t)oy * geo.out_w + ox) * n;
            const int32_t ix0 = (int32_t)(ox * geo.sw) - geo.pl;
            const uint32_t kx0 = ix0 < 0 ? (uint32_t)-ix0 : 0u;
            const uint32_t kx1 = LRT_MIN((uint32_t)geo.kw, (uint32_t)((int32_t)geo.in_w - ix0));
            /* taps inside the input: rows ky0..ky1-1, in each a contiguous run of
             * (kx1 - kx0) * in_c values (padding taps have x - zp = 0) */
            const uint32_t run = (kx1 - kx0) * geo.in_c;
            const int inside = ky0 == 0 && kx0 == 0 && ky1 == geo.kh && kx1 == geo.kw;
            int gathered = 0;
            /* channel by channel: dz is sparse (ReLU masks, and below a max-pool only one
             * pixel of each window has a gradient) */
            for (o = 0; o < n; o++) {
                const int32_t dv = d[o], dvo = d[o] * off;
                if (dv == 0 || ky0 >= ky1 || kx0 >= kx1)
                    continue;
                if (inside && m <= WGRAD_PATCH_MAX && geo.kh > 1) {
                    /* a small filter (a first layer: 9 taps in runs of 3): its window copied
                     * once per pixel, then one run of m per channel */
                    if (!gathered) {
                        for (ky = 0; ky < geo.kh; ky++)
                            memcpy(patch + (size_t)ky * run,
                                   x + ((size_t)(iy0 + (int32_t)ky) * geo.in_w + (size_t)ix0) *
                                           geo.in_c,
                                   run);
                        gathered = 1;
                    }
                    scatter_run(g + (size_t)o * m, patch, m, dv);
                    continue;
                }
                for (ky = ky0; ky < ky1; ky++) {
                    int32_t *row = g + (size_t)o * m + ((size_t)ky * geo.kw + kx0) * geo.in_c;
                    const int8_t *px = x + ((size_t)(iy0 + (int32_t)ky) * geo.in_w +
                                            (size_t)(ix0 + (int32_t)kx0)) *
                                               geo.in_c;
                    scatter_run(row, px, run, dv);
                    /* the offset term: per tap for a window cut by padding, once per channel
                     * (below) for windows inside */
                    if (!inside)
                        for (t = 0; t < run; t++)
                            row[t] += dvo;
                }
            }
        }
    }
    if (off == 0)
        return;
    /* the windows inside: off * (their sum of dz) on every tap of the channel; the sums in
     * one pass over the pixels per WGRAD_DSUM_CHUNK channels (dz is pixel-major) */
    for (o0 = 0; o0 < n; o0 = (uint16_t)(o0 + WGRAD_DSUM_CHUNK)) {
        const uint16_t nc = (uint16_t)LRT_MIN((uint32_t)WGRAD_DSUM_CHUNK, (uint32_t)n - o0);
        int32_t dsum[WGRAD_DSUM_CHUNK];
        memset(dsum, 0, sizeof(dsum));
        for (oy = 0; oy < geo.out_h; oy++) {
            const int32_t iy0 = (int32_t)(oy * geo.sh) - geo.pt;
            if (iy0 < 0 || iy0 + geo.kh > geo.in_h)
                continue;
            for (ox = 0; ox < geo.out_w; ox++) {
                const int32_t ix0 = (int32_t)(ox * geo.sw) - geo.pl;
                const int8_t *d = dz + ((size_t)oy * geo.out_w + ox) * n + o0;
                if (ix0 < 0 || ix0 + geo.kw > geo.in_w)
                    continue;
                for (o = 0; o < nc; o++)
                    dsum[o] += d[o];
            }
        }
        for (o = 0; o < nc; o++) {
            int32_t *row = g + (size_t)(o0 + o) * m;
            const int32_t add = dsum[o] * off;
            if (add != 0)
                for (t = 0; t < m; t++)
                    row[t] += add;
        }
    }
}
