/* cca.c — PWCCA from fold co-moments (cca.h), double precision, OpenBLAS's CBLAS and LAPACK.
 * Must not: do I/O or MPI. */
#include "cca.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "lapack.h"

/* Entry (i, j) of the block of m (dim x dim) at rows idx_a and columns idx_b. */
static void gather_block(const double *m, int dim, const int *ia, int na, const int *ib, int nb, double *out) {
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) out[(int64_t)i * nb + j] = m[(int64_t)ia[i] * dim + ib[j]];
}

/* One view's covariance block s (len x len from offset z0 of the dim x dim S) divided by its largest
 * |entry| (scale), restricted to the dimensions with scaled variance >= eps (idx), and its
 * eigendecomposition: eigenvector c is row c of v (column c in LAPACK's order), eigenvalues w ascending. */
typedef struct {
    int n, *idx;
    double scale, *v, *w;
} ViewEig;

/* The kept dimensions of the view for eps into idx (len); returns their count. */
static int view_keep(const double *s, int dim, int z0, int len, double scale, double eps, int *idx) {
    int n = 0;
    for (int i = 0; i < len && scale > 0; i++)
        if (s[(int64_t)(z0 + i) * dim + z0 + i] / scale >= eps) idx[n++] = z0 + i;
    return n;
}

static void view_eig(const double *s, int dim, int z0, int len, double eps, ViewEig *e) {
    double a = 0;
    for (int i = 0; i < len; i++)
        for (int j = 0; j < len; j++) a = fmax(a, fabs(s[(int64_t)(z0 + i) * dim + z0 + j]));
    e->scale = a;
    e->idx = koe_malloc(sizeof(int) * (len > 0 ? len : 1));
    const int n = e->n = view_keep(s, dim, z0, len, a, eps, e->idx);
    e->v = e->w = NULL;
    if (n == 0) return;
    e->v = koe_malloc(sizeof(double) * n * n);
    e->w = koe_malloc(sizeof(double) * n);
    gather_block(s, dim, e->idx, n, e->idx, n, e->v);
    for (int64_t i = 0; i < (int64_t)n * n; i++) e->v[i] /= a;
    int info, lwork = -1, liwork = -1, qi;
    double q;
    dsyevd_("V", "U", &n, e->v, &n, e->w, &q, &lwork, &qi, &liwork, &info);
    lwork = (int)q, liwork = qi;
    double *work = koe_malloc(sizeof(double) * lwork);
    int *iwork = koe_malloc(sizeof(int) * liwork);
    dsyevd_("V", "U", &n, e->v, &n, e->w, work, &lwork, iwork, &liwork, &info);
    free(work), free(iwork);
    KOE_ASSERT(info == 0);
}

static void view_eig_free(ViewEig *e) {
    free(e->idx), free(e->v), free(e->w);
    memset(e, 0, sizeof *e);
}

/* Does eps keep the same dimensions as e? (Then e's eigendecomposition serves it too.) */
static int view_same_keep(const double *s, int dim, int z0, int len, double eps, const ViewEig *e) {
    int *idx = koe_malloc(sizeof(int) * (len > 0 ? len : 1));
    const int n = view_keep(s, dim, z0, len, e->scale, eps, idx);
    const int same = n == e->n && (n == 0 || !memcmp(idx, e->idx, sizeof(int) * n));
    free(idx);
    return same;
}

/* The whitening W = V_r (L_r + eps)^(-1/2) (n x r) over the eigenvalues > tol * max, largest first. */
static double *view_whiten(const ViewEig *e, double eps, double tol, int *r) {
    const int n = e->n;
    *r = 0;
    if (n == 0) return NULL;
    const double lmax = e->w[n - 1];
    int rr = 0;
    while (rr < n && e->w[n - 1 - rr] > tol * lmax) rr++;
    double *W = koe_malloc(sizeof(double) * n * (rr > 0 ? rr : 1));
    for (int c = 0; c < rr; c++) {
        const int ev = n - 1 - c;
        const double f = 1.0 / sqrt(fmax(e->w[ev] + eps, eps));
        for (int i = 0; i < n; i++) W[(int64_t)i * rr + c] = e->v[(int64_t)ev * n + i] * f;
    }
    *r = rr;
    return W;
}

/* Thin SVD of t (rx x ry, row-major): u (rx x k) and v (ry x k) columns, s (k), k = min(rx, ry).
 * LAPACK sees t as t^T (column-major), whose left singular vectors are t's right ones. */
static void svd_thin(double *t, int rx, int ry, double *u, double *s, double *v) {
    const int m = ry, n = rx, k = rx < ry ? rx : ry;
    double *lu = koe_malloc(sizeof(double) * m * k), *lvt = koe_malloc(sizeof(double) * k * n);
    int *iwork = koe_malloc(sizeof(int) * 8 * k), info, lwork = -1;
    double q;
    dgesdd_("S", &m, &n, t, &m, s, lu, &m, lvt, &k, &q, &lwork, iwork, &info);
    lwork = (int)q;
    double *work = koe_malloc(sizeof(double) * lwork);
    dgesdd_("S", &m, &n, t, &m, s, lu, &m, lvt, &k, work, &lwork, iwork, &info);
    KOE_ASSERT(info == 0);
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < rx; j++) u[(int64_t)j * k + i] = lvt[i + (int64_t)j * k];
        for (int j = 0; j < ry; j++) v[(int64_t)j * k + i] = lu[j + (int64_t)i * m];
    }
    free(work);
    free(iwork);
    free(lu);
    free(lvt);
}

/* The fit from the scaled views: S (dim x dim, = M / (n - 1)), each view's eigendecomposition and
 * whitening (W (n x r)). */
static int fit_core(CcaFit *fit, const double *s, int dim, const ViewEig *ex, const double *wx, int rx,
                    const ViewEig *ey, const double *wy, int ry) {
    memset(fit, 0, sizeof *fit);
    const int nx = fit->nx = ex->n, ny = fit->ny = ey->n, k = rx < ry ? rx : ry;
    fit->ix = koe_malloc(sizeof(int) * (nx ? nx : 1));
    fit->iy = koe_malloc(sizeof(int) * (ny ? ny : 1));
    if (nx) memcpy(fit->ix, ex->idx, sizeof(int) * nx);
    if (ny) memcpy(fit->iy, ey->idx, sizeof(int) * ny);
    fit->k = k;
    fit->weight_x = rx < ry;
    if (k == 0) return 0;
    /* t = W_x^T S~xy W_y, S~xy = S_xy / sqrt(ab) */
    double *sxy = koe_malloc(sizeof(double) * nx * ny), *tmp = koe_malloc(sizeof(double) * nx * ry);
    double *t = koe_malloc(sizeof(double) * rx * ry);
    gather_block(s, dim, fit->ix, nx, fit->iy, ny, sxy);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nx, ry, ny, 1.0 / sqrt(ex->scale * ey->scale), sxy, ny, wy,
                ry, 0.0, tmp, ry);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rx, ry, nx, 1.0, wx, rx, tmp, ry, 0.0, t, ry);
    double *u = koe_malloc(sizeof(double) * rx * k), *v = koe_malloc(sizeof(double) * ry * k);
    fit->rho = koe_malloc(sizeof(double) * k);
    svd_thin(t, rx, ry, u, fit->rho, v);
    /* A_x = (W_x U)^T: (k, nx); A_y = (W_y V)^T: (k, ny) */
    fit->ax = koe_malloc(sizeof(double) * k * nx);
    fit->ay = koe_malloc(sizeof(double) * k * ny);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, k, nx, rx, 1.0, u, k, wx, rx, 0.0, fit->ax, nx);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, k, ny, ry, 1.0, v, k, wy, ry, 0.0, fit->ay, ny);
    free(sxy), free(tmp), free(t), free(u), free(v);
    return k;
}

/* The co-moment m (dim x dim, n units) turned into the covariance, in place. */
static void to_covariance(double *m, int dim, double n) {
    KOE_ASSERT(n > 1);
    for (int64_t i = 0; i < (int64_t)dim * dim; i++) m[i] /= n - 1;
}

int cca_fit(CcaFit *fit, int dim, double n, const double *m, CcaViews vw, double eps_x, double eps_y, double tol) {
    double *s = koe_malloc(sizeof(double) * dim * dim);
    memcpy(s, m, sizeof(double) * dim * dim);
    to_covariance(s, dim, n);
    ViewEig ex, ey;
    view_eig(s, dim, vw.x0, vw.p, eps_x, &ex);
    view_eig(s, dim, vw.y0, vw.q, eps_y, &ey);
    int rx, ry;
    double *wx = view_whiten(&ex, eps_x, tol, &rx), *wy = view_whiten(&ey, eps_y, tol, &ry);
    const int k = fit_core(fit, s, dim, &ex, wx, rx, &ey, wy, ry);
    view_eig_free(&ex), view_eig_free(&ey);
    free(s), free(wx), free(wy);
    return k;
}

void cca_fit_free(CcaFit *fit) {
    free(fit->ix);
    free(fit->iy);
    free(fit->ax);
    free(fit->ay);
    free(fit->rho);
    memset(fit, 0, sizeof *fit);
}

/* d_i = (A Mab B^T)_ii for A (k, na), Mab (na, nb), B (k, nb); also returns A Mab in am. */
static void diag_quad(const double *A, const double *mab, const double *B, int k, int na, int nb, double *am,
                      double *d) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, nb, na, 1.0, A, na, mab, nb, 0.0, am, nb);
    for (int i = 0; i < k; i++) d[i] = cblas_ddot(nb, am + (int64_t)i * nb, 1, B + (int64_t)i * nb, 1);
}

/* The Cholesky factor G = L L^T (L = R^T lower, k x k row-major, zero on entry) over the canonical
 * directions that vary on the evaluation set, in order: direction i is left out (keep[i] = 0) when its
 * x or y variance is at most CCA_HELD_OUT_TOL of the largest, or when its part not explained by the
 * directions kept before it is at most CCA_HELD_OUT_TOL of its variance (a class absent from the fold
 * makes such a dependence). A left-out direction's column of L stays zero (no row is ever read but
 * a kept one's), so each entry is one contiguous dot product of two rows. Returns the count kept. */
static int held_out_cholesky(const double *g, int k, const double *dxx, const double *dyy, unsigned char *keep,
                             double *l) {
    double mx = 0, my = 0;
    for (int i = 0; i < k; i++) mx = fmax(mx, dxx[i]), my = fmax(my, dyy[i]);
    int nk = 0;
    for (int i = 0; i < k; i++) {
        keep[i] = 0;
        if (!(dxx[i] > CCA_HELD_OUT_TOL * mx && dyy[i] > CCA_HELD_OUT_TOL * my)) continue;
        double *li = l + (int64_t)i * k, d = g[(int64_t)i * k + i];
        for (int j = 0; j < i; j++) {
            if (!keep[j]) continue;
            const double *lj = l + (int64_t)j * k;
            li[j] = (g[(int64_t)j * k + i] - cblas_ddot(j, lj, 1, li, 1)) / lj[j];
            d -= li[j] * li[j];
        }
        if (d > CCA_HELD_OUT_TOL * g[(int64_t)i * k + i]) {
            keep[i] = 1;
            li[i] = sqrt(d);
            nk++;
        }
    }
    return nk;
}

/* PWCCA, mean rho and rho1 over the kept directions: B = R^-T (A_v M_vv) on the kept rows, alpha_i = sum_j |B_ij|. */
static void weighted_score(const double *l, const unsigned char *keep, int k, const double *bv, int nv,
                           const double *dxx, const double *dyy, const double *dxy, CcaScore *out) {
    int nk = 0, *kk = koe_malloc(sizeof(int) * k);
    for (int i = 0; i < k; i++)
        if (keep[i]) kk[nk++] = i;
    double *rc = koe_malloc(sizeof(double) * nk * nk), *b = koe_malloc(sizeof(double) * nk * nv);
    for (int a = 0; a < nk; a++) {
        for (int c = 0; c < nk; c++) rc[(int64_t)a * nk + c] = c >= a ? l[(int64_t)kk[c] * k + kk[a]] : 0;
        memcpy(b + (int64_t)a * nv, bv + (int64_t)kk[a] * nv, sizeof(double) * nv);
    }
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, nk, nv, 1.0, rc, nk, b, nv);
    double wsum = 0, acc = 0, rsum = 0;
    for (int a = 0; a < nk; a++) {
        const int i = kk[a];
        double alpha = 0;
        for (int j = 0; j < nv; j++) alpha += fabs(b[(int64_t)a * nv + j]);
        const double rho = dxy[i] / sqrt(dxx[i] * dyy[i]);
        wsum += alpha;
        acc += alpha * rho;
        rsum += rho;
        if (a == 0) out->rho1 = rho;
    }
    out->pwcca = acc / wsum;
    out->mean_rho = rsum / nk;
    out->k = k;
    out->dropped = k - nk;
    free(kk), free(rc), free(b);
}

int cca_eval(const CcaFit *fit, int dim, const double *m, CcaScore *out) {
    const int k = fit->k, nx = fit->nx, ny = fit->ny;
    memset(out, 0, sizeof *out);
    if (k == 0) return -1;
    const int nv = fit->weight_x ? nx : ny;
    double *mxx = koe_malloc(sizeof(double) * nx * nx), *myy = koe_malloc(sizeof(double) * ny * ny);
    double *mxy = koe_malloc(sizeof(double) * nx * ny);
    gather_block(m, dim, fit->ix, nx, fit->ix, nx, mxx);
    gather_block(m, dim, fit->iy, ny, fit->iy, ny, myy);
    gather_block(m, dim, fit->ix, nx, fit->iy, ny, mxy);
    const int wide = nx > ny ? nx : ny;
    double *amx = koe_malloc(sizeof(double) * k * wide), *amy = koe_malloc(sizeof(double) * k * ny);
    double *dxx = koe_malloc(sizeof(double) * k * 3), *dyy = dxx + k, *dxy = dxx + 2 * k;
    diag_quad(fit->ay, myy, fit->ay, k, ny, ny, amy, dyy);
    diag_quad(fit->ax, mxy, fit->ay, k, nx, ny, amx, dxy);
    diag_quad(fit->ax, mxx, fit->ax, k, nx, nx, amx, dxx);
    /* the weighting view's A_v M_vv is now in amx (x) or amy (y) */
    const double *av = fit->weight_x ? fit->ax : fit->ay, *bv = fit->weight_x ? amx : amy;
    double *g = koe_malloc(sizeof(double) * k * k), *l = koe_calloc((size_t)k * k, sizeof(double));
    unsigned char *keep = koe_malloc((size_t)k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, k, nv, 1.0, bv, nv, av, nv, 0.0, g, k);
    const int nk = held_out_cholesky(g, k, dxx, dyy, keep, l);
    if (nk > 0) weighted_score(l, keep, k, bv, nv, dxx, dyy, dxy, out);
    free(mxx), free(myy), free(mxy), free(amx), free(amy), free(dxx), free(g), free(l), free(keep);
    return nk > 0 ? 0 : -1;
}

/* One view of a trial's training set, for every eps of the grid: the eigendecomposition (shared
 * between eps values that keep the same dimensions) and the whitening. */
typedef struct {
    ViewEig eig[CCA_MAX_EPS];
    int owner[CCA_MAX_EPS]; /* eps i uses eig[owner[i]] */
    double *w[CCA_MAX_EPS];
    int r[CCA_MAX_EPS];
} ViewGrid;

static void grid_init(ViewGrid *g, const double *s, int dim, int z0, int len, const CcaProtocol *pr) {
    for (int i = 0; i < pr->n_eps; i++) {
        int o = i;
        for (int j = 0; j < i && o == i; j++)
            if (g->owner[j] == j && view_same_keep(s, dim, z0, len, pr->eps[i], &g->eig[j])) o = j;
        g->owner[i] = o;
        if (o == i) view_eig(s, dim, z0, len, pr->eps[i], &g->eig[i]);
        g->w[i] = view_whiten(&g->eig[o], pr->eps[i], pr->null_tol, &g->r[i]);
    }
}

static void grid_free(ViewGrid *g, int n_eps) {
    for (int i = 0; i < n_eps; i++) {
        if (g->owner[i] == i) view_eig_free(&g->eig[i]);
        free(g->w[i]);
    }
}

/* The fit with eps pair (i, j) of the grids; returns its k (0: nothing to score). */
static int grid_fit(const double *s, int dim, const ViewGrid *gx, const ViewGrid *gy, int i, int j, CcaFit *fit) {
    return fit_core(fit, s, dim, &gx->eig[gx->owner[i]], gx->w[i], gx->r[i], &gy->eig[gy->owner[j]], gy->w[j], gy->r[j]);
}

CcaTrial cca_trial(const FoldStats *fs, CcaViews v, const CcaProtocol *pr, int t) {
    const int d = fs->dim, ne = pr->n_eps;
    KOE_ASSERT(t >= 0 && t < CCA_MAX_TRIALS && 2 * t + 1 < fs->folds && ne > 0 && ne <= CCA_MAX_EPS);
    CcaTrial res = {.pwcca = NAN, .n_dev = fs->n[2 * t], .n_test = fs->n[2 * t + 1]};
    double *mu = koe_malloc(sizeof(double) * d), *s = koe_malloc(sizeof(double) * d * d); /* one d x d buffer: */
    unsigned char *use = koe_malloc((size_t)fs->folds);                                  /* each page is a fault */
    for (int f = 0; f < fs->folds; f++) use[f] = f != 2 * t && f != 2 * t + 1;
    moments_merge_folds(fs, use, &res.n_train, mu, s);
    to_covariance(s, d, res.n_train);
    const double *m_dev = fs->m + (int64_t)(2 * t) * d * d, *m_test = fs->m + (int64_t)(2 * t + 1) * d * d;
    ViewGrid gx, gy;
    grid_init(&gx, s, d, v.x0, v.p, pr);
    grid_init(&gy, s, d, v.y0, v.q, pr);
    /* every pair fitted and scored on the dev fold; a fit is kept while it can still be the choice (its
     * dev PWCCA within 1e-12 of the best so far), so the chosen one is scored on the test fold as fitted */
    CcaFit fits[CCA_MAX_EPS * CCA_MAX_EPS];
    unsigned char kept[CCA_MAX_EPS * CCA_MAX_EPS] = {0};
    double best = -INFINITY, dev[CCA_MAX_EPS * CCA_MAX_EPS];
    CcaScore sc = {0};
    for (int e = 0; e < ne * ne; e++) {
        res.k = grid_fit(s, d, &gx, &gy, e / ne, e % ne, &fits[e]);
        kept[e] = 1;
        dev[e] = res.k > 0 && cca_eval(&fits[e], d, m_dev, &sc) == 0 ? sc.pwcca : NAN;
        if (dev[e] > best) best = dev[e];
        for (int j = 0; j <= e; j++)
            if (kept[j] && !(dev[j] >= best - 1e-12)) cca_fit_free(&fits[j]), kept[j] = 0;
    }
    int e = 0;
    while (e < ne * ne && !kept[e]) e++;
    if (e < ne * ne) {
        res.eps[0] = pr->eps[e / ne], res.eps[1] = pr->eps[e % ne];
        res.k = fits[e].k;
        if (cca_eval(&fits[e], d, m_test, &sc) == 0) res.pwcca = sc.pwcca;
    }
    res.mean_rho = sc.mean_rho, res.rho1 = sc.rho1, res.dropped = sc.dropped;
    for (int j = 0; j < ne * ne; j++)
        if (kept[j]) cca_fit_free(&fits[j]);
    grid_free(&gx, ne), grid_free(&gy, ne);
    free(s), free(mu), free(use);
    return res;
}

CcaResult cca_combine(const CcaTrial *tr, int trials) {
    const int T = trials;
    KOE_ASSERT(T > 0 && T <= CCA_MAX_TRIALS);
    CcaResult res = {.ok = 1, .k = tr[0].k, .n_train = tr[0].n_train, .n_dev = tr[0].n_dev, .n_test = tr[0].n_test};
    double sum = 0;
    for (int t = 0; t < T; t++) {
        if (isnan(tr[t].pwcca)) res.ok = 0;
        res.trial[t] = tr[t].pwcca;
        sum += tr[t].pwcca;
        res.mean_rho += tr[t].mean_rho / T;
        res.rho1 += tr[t].rho1 / T;
        res.dropped = tr[t].dropped > res.dropped ? tr[t].dropped : res.dropped;
        res.eps[t][0] = tr[t].eps[0], res.eps[t][1] = tr[t].eps[1];
    }
    res.pwcca = sum / T;
    double ss = 0;
    for (int t = 0; t < T; t++) ss += (res.trial[t] - res.pwcca) * (res.trial[t] - res.pwcca);
    res.pwcca_std = T > 1 ? sqrt(ss / (T - 1)) : 0;
    return res;
}

CcaResult cca_protocol(const FoldStats *fs, CcaViews v, const CcaProtocol *pr) {
    KOE_ASSERT(pr->trials > 0 && pr->trials <= CCA_MAX_TRIALS && 2 * pr->trials <= fs->folds);
    CcaTrial tr[CCA_MAX_TRIALS];
    for (int t = 0; t < pr->trials; t++) tr[t] = cca_trial(fs, v, pr, t);
    return cca_combine(tr, pr->trials);
}
