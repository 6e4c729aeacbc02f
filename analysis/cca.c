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

/* One view of the fit: the largest |entry| of its covariance block s (len x len, from offset z0),
 * the kept indices (scaled variance >= eps), and the whitening W = V_r (L_r + eps)^(-1/2)
 * (nkept x r, returned) of the scaled block. *scale gets the divisor. */
static double *whiten(const double *s, int dim, int z0, int len, double eps, double tol, int **idx, int *nkept,
                      int *r, double *scale) {
    double a = 0;
    for (int i = 0; i < len; i++)
        for (int j = 0; j < len; j++) a = fmax(a, fabs(s[(int64_t)(z0 + i) * dim + z0 + j]));
    *scale = a;
    *idx = koe_malloc(sizeof(int) * (len > 0 ? len : 1));
    int n = 0;
    for (int i = 0; i < len && a > 0; i++)
        if (s[(int64_t)(z0 + i) * dim + z0 + i] / a >= eps) (*idx)[n++] = z0 + i;
    *nkept = n;
    *r = 0;
    if (n == 0) return NULL;
    double *v = koe_malloc(sizeof(double) * n * n), *w = koe_malloc(sizeof(double) * n);
    gather_block(s, dim, *idx, n, *idx, n, v);
    for (int64_t i = 0; i < (int64_t)n * n; i++) v[i] /= a;
    int info, lwork = -1;
    double q;
    dsyev_("V", "U", &n, v, &n, w, &q, &lwork, &info);
    lwork = (int)q;
    double *work = koe_malloc(sizeof(double) * lwork);
    dsyev_("V", "U", &n, v, &n, w, work, &lwork, &info);
    free(work);
    KOE_ASSERT(info == 0);
    /* eigenvector c is row c of v (column c in LAPACK's column-major order); descending order */
    double *W = koe_malloc(sizeof(double) * n * n);
    const double lmax = w[n - 1];
    int rr = 0;
    for (int c = n - 1; c >= 0; c--) {
        if (!(w[c] > tol * lmax)) break;
        const double f = 1.0 / sqrt(fmax(w[c] + eps, eps));
        for (int i = 0; i < n; i++) W[(int64_t)i * n + rr] = v[(int64_t)c * n + i] * f;
        rr++;
    }
    /* compact W to (n, rr) */
    for (int i = 0; i < n; i++) memmove(W + (int64_t)i * rr, W + (int64_t)i * n, sizeof(double) * rr);
    *r = rr;
    free(v);
    free(w);
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

int cca_fit(CcaFit *fit, int dim, double n, const double *m, CcaViews vw, double eps_x, double eps_y, double tol) {
    memset(fit, 0, sizeof *fit);
    KOE_ASSERT(n > 1);
    double *s = koe_malloc(sizeof(double) * dim * dim);
    for (int64_t i = 0; i < (int64_t)dim * dim; i++) s[i] = m[i] / (n - 1);
    double a, b;
    int rx, ry;
    double *wx = whiten(s, dim, vw.x0, vw.p, eps_x, tol, &fit->ix, &fit->nx, &rx, &a);
    double *wy = whiten(s, dim, vw.y0, vw.q, eps_y, tol, &fit->iy, &fit->ny, &ry, &b);
    const int nx = fit->nx, ny = fit->ny, k = rx < ry ? rx : ry;
    fit->k = k;
    fit->weight_x = rx < ry;
    if (k == 0) {
        free(s), free(wx), free(wy);
        return 0;
    }
    /* t = W_x^T S~xy W_y, S~xy = S_xy / sqrt(ab) */
    double *sxy = koe_malloc(sizeof(double) * nx * ny), *tmp = koe_malloc(sizeof(double) * nx * ry);
    double *t = koe_malloc(sizeof(double) * rx * ry);
    gather_block(s, dim, fit->ix, nx, fit->iy, ny, sxy);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nx, ry, ny, 1.0 / sqrt(a * b), sxy, ny, wy, ry, 0.0, tmp, ry);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rx, ry, nx, 1.0, wx, rx, tmp, ry, 0.0, t, ry);
    double *u = koe_malloc(sizeof(double) * rx * k), *v = koe_malloc(sizeof(double) * ry * k);
    fit->rho = koe_malloc(sizeof(double) * k);
    svd_thin(t, rx, ry, u, fit->rho, v);
    /* A_x = (W_x U)^T: (k, nx); A_y = (W_y V)^T: (k, ny) */
    fit->ax = koe_malloc(sizeof(double) * k * nx);
    fit->ay = koe_malloc(sizeof(double) * k * ny);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, k, nx, rx, 1.0, u, k, wx, rx, 0.0, fit->ax, nx);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, k, ny, ry, 1.0, v, k, wy, ry, 0.0, fit->ay, ny);
    free(s), free(wx), free(wy), free(sxy), free(tmp), free(t), free(u), free(v);
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
    double *g = koe_malloc(sizeof(double) * k * k), *b = koe_malloc(sizeof(double) * k * nv);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, k, nv, 1.0, bv, nv, av, nv, 0.0, g, k);
    memcpy(b, bv, sizeof(double) * k * nv);
    int info;
    /* column-major "L" of the symmetric g: the row-major upper triangle holds R, g = R^T R */
    dpotrf_("L", &k, g, &k, &info);
    int rc = -1;
    if (info == 0) {
        cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, k, nv, 1.0, g, k, b, nv);
        double wsum = 0, acc = 0, rsum = 0;
        for (int i = 0; i < k; i++) {
            double alpha = 0;
            for (int j = 0; j < nv; j++) alpha += fabs(b[(int64_t)i * nv + j]);
            const double rho = dxy[i] / sqrt(dxx[i] * dyy[i]);
            wsum += alpha;
            acc += alpha * rho;
            rsum += rho;
            if (i == 0) out->rho1 = rho;
        }
        out->pwcca = acc / wsum;
        out->mean_rho = rsum / k;
        out->k = k;
        rc = 0;
    }
    free(mxx), free(myy), free(mxy), free(amx), free(amy), free(dxx), free(g), free(b);
    return rc;
}

/* Fit on the training set of a trial with (ex, ey) and score on m_eval; NaN on failure. */
static double fit_and_score(int dim, double n, const double *m_tr, CcaViews v, double ex, double ey, double tol,
                            const double *m_eval, CcaScore *sc, int *k) {
    CcaFit fit;
    double r = NAN;
    *k = cca_fit(&fit, dim, n, m_tr, v, ex, ey, tol);
    if (*k > 0 && cca_eval(&fit, dim, m_eval, sc) == 0) r = sc->pwcca;
    cca_fit_free(&fit);
    return r;
}

CcaResult cca_protocol(const FoldStats *fs, CcaViews v, const CcaProtocol *pr) {
    CcaResult res = {.ok = 1};
    const int d = fs->dim, T = pr->trials;
    KOE_ASSERT(T > 0 && T <= CCA_MAX_TRIALS && 2 * T <= fs->folds && pr->n_eps > 0);
    double n_tr, *mu = koe_malloc(sizeof(double) * d), *m_tr = koe_malloc(sizeof(double) * d * d);
    unsigned char *use = koe_malloc((size_t)fs->folds);
    double sum = 0;
    for (int t = 0; t < T && res.ok; t++) {
        for (int f = 0; f < fs->folds; f++) use[f] = f != 2 * t && f != 2 * t + 1;
        moments_merge_folds(fs, use, &n_tr, mu, m_tr);
        const double *m_dev = fs->m + (int64_t)(2 * t) * d * d, *m_test = fs->m + (int64_t)(2 * t + 1) * d * d;
        double best = -INFINITY, dev[64];
        const int np = pr->n_eps * pr->n_eps;
        KOE_ASSERT(np <= 64);
        CcaScore sc;
        int k;
        for (int e = 0; e < np; e++) {
            dev[e] = fit_and_score(d, n_tr, m_tr, v, pr->eps[e / pr->n_eps], pr->eps[e % pr->n_eps], pr->null_tol,
                                   m_dev, &sc, &k);
            if (dev[e] > best) best = dev[e];
        }
        int e = 0;
        while (e < np && !(dev[e] >= best - 1e-12)) e++;
        if (e == np) {
            res.ok = 0;
            break;
        }
        res.eps[t][0] = pr->eps[e / pr->n_eps];
        res.eps[t][1] = pr->eps[e % pr->n_eps];
        const double s = fit_and_score(d, n_tr, m_tr, v, res.eps[t][0], res.eps[t][1], pr->null_tol, m_test, &sc, &k);
        if (isnan(s)) res.ok = 0;
        res.trial[t] = s;
        sum += s;
        res.mean_rho += sc.mean_rho / T;
        res.rho1 += sc.rho1 / T;
        if (t == 0) res.k = k, res.n_train = n_tr, res.n_dev = fs->n[0], res.n_test = fs->n[1];
    }
    res.pwcca = sum / T;
    double ss = 0;
    for (int t = 0; t < T; t++) ss += (res.trial[t] - res.pwcca) * (res.trial[t] - res.pwcca);
    res.pwcca_std = T > 1 ? sqrt(ss / (T - 1)) : 0;
    free(mu), free(m_tr), free(use);
    return res;
}
