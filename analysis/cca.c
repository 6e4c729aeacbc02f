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

/* A view's basis: the eigenvectors with eigenvalue > tol * max, largest first, as the columns of
 * q (n x r); the whitening of eps is W = q diag(d), d = (L_r + eps)^(-1/2) (view_scale). r does not
 * depend on eps, so every eps an eigendecomposition serves shares its basis. */
static double *view_basis(const ViewEig *e, double tol, int *r) {
    const int n = e->n;
    int rr = 0;
    while (rr < n && e->w[n - 1 - rr] > tol * e->w[n - 1]) rr++;
    double *q = koe_malloc(sizeof(double) * n * rr);
    for (int c = 0; c < rr; c++)
        for (int i = 0; i < n; i++) q[(int64_t)i * rr + c] = e->v[(int64_t)(n - 1 - c) * n + i];
    *r = rr;
    return q;
}

static void view_scale(const ViewEig *e, int r, double eps, double *d) {
    for (int c = 0; c < r; c++) d[c] = 1.0 / sqrt(fmax(e->w[e->n - 1 - c] + eps, eps));
}

/* f Q_a^T M_ab Q_b (ra x rb) for the block of m (dim x dim) at rows ia (na) and columns ib (nb), Q_a
 * (na x ra) and Q_b (nb x rb). */
static double *cross_basis(const double *m, int dim, const int *ia, int na, const double *qa, int ra, const int *ib,
                           int nb, const double *qb, int rb, double f) {
    double *c = koe_malloc(sizeof(double) * ra * rb);
    if (ra == 0 || rb == 0) return c;
    double *mab = koe_malloc(sizeof(double) * na * nb), *tmp = koe_malloc(sizeof(double) * na * rb);
    gather_block(m, dim, ia, na, ib, nb, mab);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, na, rb, nb, f, mab, nb, qb, rb, 0.0, tmp, rb);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ra, rb, na, 1.0, qa, ra, tmp, rb, 0.0, c, rb);
    free(mab), free(tmp);
    return c;
}

/* Thin SVD of t (rx x ry, row-major): the singular vectors as the rows of ut (k x rx) and vt (k x ry),
 * s (k), k = min(rx, ry). LAPACK sees t as t^T (column-major), whose left singular vectors are t's
 * right ones. */
static void svd_thin(double *t, int rx, int ry, double *ut, double *s, double *vt) {
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
        for (int j = 0; j < rx; j++) ut[(int64_t)i * rx + j] = lvt[i + (int64_t)j * k];
        memcpy(vt + (int64_t)i * ry, lu + (int64_t)i * m, sizeof(double) * ry);
    }
    free(work);
    free(iwork);
    free(lu);
    free(lvt);
}

/* One eps pair's solution in its views' bases: the SVD of diag(dx) B diag(dy) = U diag(rho) V^T
 * (B = Q_x^T S~xy Q_y, so this is W_x^T S~xy W_y) and the canonical directions in the bases,
 * ex = (diag(dx) U)^T (k x rx), ey = (diag(dy) V)^T (k x ry): A_x = ex Q_x^T. */
typedef struct {
    int k, rx, ry;
    double *ex, *ey, *rho;
} PairSol;

static int pair_solve(const double *b, int rx, int ry, const double *dx, const double *dy, PairSol *ps) {
    const int k = rx < ry ? rx : ry;
    *ps = (PairSol){.k = k, .rx = rx, .ry = ry};
    if (k == 0) return 0;
    double *t = koe_malloc(sizeof(double) * rx * ry);
    for (int i = 0; i < rx; i++)
        for (int j = 0; j < ry; j++) t[(int64_t)i * ry + j] = dx[i] * b[(int64_t)i * ry + j] * dy[j];
    ps->ex = koe_malloc(sizeof(double) * k * rx), ps->ey = koe_malloc(sizeof(double) * k * ry);
    ps->rho = koe_malloc(sizeof(double) * k);
    svd_thin(t, rx, ry, ps->ex, ps->rho, ps->ey);
    for (int c = 0; c < k; c++) {
        for (int i = 0; i < rx; i++) ps->ex[(int64_t)c * rx + i] *= dx[i];
        for (int j = 0; j < ry; j++) ps->ey[(int64_t)c * ry + j] *= dy[j];
    }
    free(t);
    return k;
}

static void pair_free(PairSol *ps) {
    free(ps->ex), free(ps->ey), free(ps->rho);
    memset(ps, 0, sizeof *ps);
}

/* The fit of a solution (its rho moved into the fit): A_x = ex Q_x^T (k, nx), A_y = ey Q_y^T (k, ny). */
static int fit_from_pair(CcaFit *fit, const ViewEig *vx, const double *qx, const ViewEig *vy, const double *qy,
                         PairSol *ps) {
    memset(fit, 0, sizeof *fit);
    const int nx = fit->nx = vx->n, ny = fit->ny = vy->n, k = fit->k = ps->k;
    fit->ix = koe_malloc(sizeof(int) * nx);
    fit->iy = koe_malloc(sizeof(int) * ny);
    memcpy(fit->ix, vx->idx, sizeof(int) * nx);
    memcpy(fit->iy, vy->idx, sizeof(int) * ny);
    fit->weight_x = ps->rx < ps->ry;
    if (k == 0) return 0;
    fit->ax = koe_malloc(sizeof(double) * k * nx);
    fit->ay = koe_malloc(sizeof(double) * k * ny);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, nx, ps->rx, 1.0, ps->ex, ps->rx, qx, ps->rx, 0.0, fit->ax, nx);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, ny, ps->ry, 1.0, ps->ey, ps->ry, qy, ps->ry, 0.0, fit->ay, ny);
    fit->rho = ps->rho, ps->rho = NULL;
    return k;
}

/* The co-moment m (dim x dim, n units) turned into the covariance, in place. */
static void to_covariance(double *m, int dim, double n) {
    KOE_ASSERT(n > 1);
    for (int64_t i = 0; i < (int64_t)dim * dim; i++) m[i] /= n - 1;
}

/* The cross block of the scaled covariance s in the bases: Q_x^T S~xy Q_y, S~xy = S_xy / sqrt(ab). */
static double *train_cross(const double *s, int dim, const ViewEig *ex, const double *qx, int rx, const ViewEig *ey,
                           const double *qy, int ry) {
    return cross_basis(s, dim, ex->idx, ex->n, qx, rx, ey->idx, ey->n, qy, ry,
                       rx && ry ? 1.0 / sqrt(ex->scale * ey->scale) : 0);
}

int cca_fit(CcaFit *fit, int dim, double n, const double *m, CcaViews vw, double eps_x, double eps_y, double tol) {
    double *s = koe_malloc(sizeof(double) * dim * dim);
    memcpy(s, m, sizeof(double) * dim * dim);
    to_covariance(s, dim, n);
    ViewEig ex, ey;
    view_eig(s, dim, vw.x0, vw.p, eps_x, &ex);
    view_eig(s, dim, vw.y0, vw.q, eps_y, &ey);
    int rx, ry;
    double *qx = view_basis(&ex, tol, &rx), *qy = view_basis(&ey, tol, &ry);
    double *dx = koe_malloc(sizeof(double) * rx), *dy = koe_malloc(sizeof(double) * ry);
    view_scale(&ex, rx, eps_x, dx), view_scale(&ey, ry, eps_y, dy);
    double *b = train_cross(s, dim, &ex, qx, rx, &ey, qy, ry);
    PairSol ps;
    pair_solve(b, rx, ry, dx, dy, &ps);
    const int k = fit_from_pair(fit, &ex, qx, &ey, qy, &ps);
    pair_free(&ps), view_eig_free(&ex), view_eig_free(&ey);
    free(s), free(qx), free(qy), free(dx), free(dy), free(b);
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

/* The score of canonical directions ax (k, bx), ay (k, by) on an evaluation set's blocks in their
 * bases, mxx (bx x bx), myy (by x by), mxy (bx x by), and the weighting view's pv = Q_v^T M_vv (b_v x
 * nv), so that A_v M_vv = a_v pv (pv is M_vv itself, and a_v M_vv already at hand, when the basis is
 * the view's own dimensions). */
static int score_core(int k, const double *ax, int bx, const double *ay, int by, const double *mxx, const double *myy,
                      const double *mxy, int weight_x, const double *pv, int nv, CcaScore *out) {
    memset(out, 0, sizeof *out);
    if (k == 0) return -1;
    const int wide = bx > by ? bx : by, bw = weight_x ? bx : by;
    double *amx = koe_malloc(sizeof(double) * k * wide), *amy = koe_malloc(sizeof(double) * k * by);
    double *dxx = koe_malloc(sizeof(double) * k * 3), *dyy = dxx + k, *dxy = dxx + 2 * k;
    diag_quad(ay, myy, ay, k, by, by, amy, dyy);
    diag_quad(ax, mxy, ay, k, bx, by, amx, dxy);
    diag_quad(ax, mxx, ax, k, bx, bx, amx, dxx);
    /* the weighting view's A_v M_vv Q_v is now in amx (x) or amy (y) */
    const double *av = weight_x ? ax : ay, *am = weight_x ? amx : amy, *mvv = weight_x ? mxx : myy;
    double *g = koe_malloc(sizeof(double) * k * k), *l = koe_calloc((size_t)k * k, sizeof(double));
    double *bv = pv == mvv ? NULL : koe_malloc(sizeof(double) * k * nv);
    unsigned char *keep = koe_malloc((size_t)k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, k, bw, 1.0, am, bw, av, bw, 0.0, g, k);
    if (bv) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, nv, bw, 1.0, av, bw, pv, nv, 0.0, bv, nv);
    const int nk = held_out_cholesky(g, k, dxx, dyy, keep, l);
    if (nk > 0) weighted_score(l, keep, k, bv ? bv : am, nv, dxx, dyy, dxy, out);
    free(amx), free(amy), free(dxx), free(g), free(l), free(bv), free(keep);
    return nk > 0 ? 0 : -1;
}

int cca_eval(const CcaFit *fit, int dim, const double *m, CcaScore *out) {
    const int nx = fit->nx, ny = fit->ny;
    double *mxx = koe_malloc(sizeof(double) * nx * nx), *myy = koe_malloc(sizeof(double) * ny * ny);
    double *mxy = koe_malloc(sizeof(double) * nx * ny);
    gather_block(m, dim, fit->ix, nx, fit->ix, nx, mxx);
    gather_block(m, dim, fit->iy, ny, fit->iy, ny, myy);
    gather_block(m, dim, fit->ix, nx, fit->iy, ny, mxy);
    const int rc = score_core(fit->k, fit->ax, nx, fit->ay, ny, mxx, myy, mxy, fit->weight_x,
                              fit->weight_x ? mxx : myy, fit->weight_x ? nx : ny, out);
    free(mxx), free(myy), free(mxy);
    return rc;
}

/* One view of a trial, for every eps of the grid: the eigendecomposition of the training set (shared
 * between eps values that keep the same dimensions), its basis, and the dev fold's blocks in that
 * basis, per owner; each eps's whitening scale. */
typedef struct {
    ViewEig eig[CCA_MAX_EPS];
    int owner[CCA_MAX_EPS]; /* eps i uses eig[owner[i]] */
    double *q[CCA_MAX_EPS]; /* (n x r) basis, per owner */
    int r[CCA_MAX_EPS];     /* per owner */
    double *p[CCA_MAX_EPS]; /* (r x n) Q^T M_dev,vv, per owner */
    double *c[CCA_MAX_EPS]; /* (r x r) Q^T M_dev,vv Q, per owner */
    double *d[CCA_MAX_EPS]; /* (r of its owner) eps i's scale */
} ViewGrid;

static void grid_init(ViewGrid *g, const double *s, const double *m_dev, int dim, int z0, int len,
                      const CcaProtocol *pr) {
    memset(g, 0, sizeof *g);
    for (int i = 0; i < pr->n_eps; i++) {
        int o = i;
        for (int j = 0; j < i && o == i; j++)
            if (g->owner[j] == j && view_same_keep(s, dim, z0, len, pr->eps[i], &g->eig[j])) o = j;
        g->owner[i] = o;
        if (o == i) {
            ViewEig *e = &g->eig[i];
            view_eig(s, dim, z0, len, pr->eps[i], e);
            const int n = e->n;
            g->q[i] = view_basis(e, pr->null_tol, &g->r[i]);
            const int r = g->r[i];
            g->p[i] = koe_malloc(sizeof(double) * r * n);
            g->c[i] = koe_malloc(sizeof(double) * r * r);
            if (r > 0) {
                double *mvv = koe_malloc(sizeof(double) * n * n);
                gather_block(m_dev, dim, e->idx, n, e->idx, n, mvv);
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, n, n, 1.0, g->q[i], r, mvv, n, 0.0, g->p[i], n);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, r, n, 1.0, g->p[i], n, g->q[i], r, 0.0, g->c[i], r);
                free(mvv);
            }
        }
        g->d[i] = koe_malloc(sizeof(double) * g->r[o]);
        view_scale(&g->eig[o], g->r[o], pr->eps[i], g->d[i]);
    }
}

static void grid_free(ViewGrid *g, int n_eps) {
    for (int i = 0; i < n_eps; i++) {
        if (g->owner[i] == i) view_eig_free(&g->eig[i]);
        free(g->q[i]), free(g->p[i]), free(g->c[i]), free(g->d[i]);
    }
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
    grid_init(&gx, s, m_dev, d, v.x0, v.p, pr);
    grid_init(&gy, s, m_dev, d, v.y0, v.q, pr);
    /* per pair of owners: the training cross block B and the dev fold's in the bases, computed once */
    double *b[CCA_MAX_EPS][CCA_MAX_EPS] = {{0}}, *cxy[CCA_MAX_EPS][CCA_MAX_EPS] = {{0}};
    /* every pair solved and scored on the dev fold; a solution is kept while it can still be the choice
     * (its dev PWCCA within 1e-12 of the best so far), so the chosen one is scored on the test fold as
     * fitted */
    PairSol sol[CCA_MAX_EPS * CCA_MAX_EPS];
    unsigned char kept[CCA_MAX_EPS * CCA_MAX_EPS] = {0};
    double best = -INFINITY, dev[CCA_MAX_EPS * CCA_MAX_EPS];
    CcaScore sc = {0};
    for (int e = 0; e < ne * ne; e++) {
        const int ox = gx.owner[e / ne], oy = gy.owner[e % ne], rx = gx.r[ox], ry = gy.r[oy];
        const ViewEig *ex = &gx.eig[ox], *ey = &gy.eig[oy];
        if (!b[ox][oy]) {
            b[ox][oy] = train_cross(s, d, ex, gx.q[ox], rx, ey, gy.q[oy], ry);
            cxy[ox][oy] = cross_basis(m_dev, d, ex->idx, ex->n, gx.q[ox], rx, ey->idx, ey->n, gy.q[oy], ry, 1.0);
        }
        const int k = res.k = pair_solve(b[ox][oy], rx, ry, gx.d[e / ne], gy.d[e % ne], &sol[e]);
        const int wx = rx < ry;
        kept[e] = 1;
        dev[e] = k > 0 && score_core(k, sol[e].ex, rx, sol[e].ey, ry, gx.c[ox], gy.c[oy], cxy[ox][oy], wx,
                                     wx ? gx.p[ox] : gy.p[oy], wx ? ex->n : ey->n, &sc) == 0
                     ? sc.pwcca
                     : NAN;
        if (dev[e] > best) best = dev[e];
        for (int j = 0; j <= e; j++)
            if (kept[j] && !(dev[j] >= best - 1e-12)) pair_free(&sol[j]), kept[j] = 0;
    }
    int e = 0;
    while (e < ne * ne && !kept[e]) e++;
    if (e < ne * ne) {
        const int ox = gx.owner[e / ne], oy = gy.owner[e % ne];
        res.eps[0] = pr->eps[e / ne], res.eps[1] = pr->eps[e % ne];
        CcaFit fit;
        res.k = fit_from_pair(&fit, &gx.eig[ox], gx.q[ox], &gy.eig[oy], gy.q[oy], &sol[e]);
        if (cca_eval(&fit, d, m_test, &sc) == 0) res.pwcca = sc.pwcca;
        cca_fit_free(&fit);
    }
    res.mean_rho = sc.mean_rho, res.rho1 = sc.rho1, res.dropped = sc.dropped;
    for (int j = 0; j < ne * ne; j++)
        if (kept[j]) pair_free(&sol[j]);
    for (int i = 0; i < ne; i++)
        for (int j = 0; j < ne; j++) free(b[i][j]), free(cxy[i][j]);
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
