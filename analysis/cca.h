/* cca.h — projection-weighted CCA (PWCCA, Morcos et al. 2018) between two views of the same units,
 * computed from fold co-moments (moments.h) as ../shared/specs/analyze_layers.md §8.5 specifies:
 * the protocol of Pasad et al.'s layerwise-analysis (fit on the training folds, choose (eps_x, eps_y)
 * on a dev fold, score a test fold, mean over trials), with two corrections: the PWCCA weights come
 * from centred canonical variates and centred activations (sign-invariant), and whitening
 * directions with eigenvalue <= tol * max are dropped (a one-hot view of q classes gives q - 1
 * directions, not a null direction scored on noise).
 *
 * Fit on a training co-moment M (n units): S = M / (n - 1); each view's block divided by its
 * largest |entry| (a, b; S_xy by sqrt(ab)) so that eps is relative; dimensions with scaled
 * variance < eps dropped; S_xx = V L V^T, kept directions W_x = V_r (L_r + eps_x)^(-1/2); the thin
 * SVD W_x^T S_xy W_y = U S V^T; A_x = (W_x U)^T, A_y = (W_y V)^T (k = min(r_x, r_y) rows); the
 * training correlations diag(S). Computed in the eigenbases: with D_x = (L_r + eps_x)^(-1/2), the SVD is
 * of D_x (V_xr^T S_xy V_yr) D_y, and A_x = (D_x U)^T V_xr^T.
 * Score on an evaluation co-moment M: rho_i = (A_x M_xy A_y^T)_ii / sqrt((A_x M_xx A_x^T)_ii
 * (A_y M_yy A_y^T)_ii); for the view v with fewer directions (y on a tie), G = A_v M_vv A_v^T = R^T R
 * (Cholesky), B = R^-T A_v M_vv (= Q^T of the centred activations), alpha_i = sum_j |B_ij|,
 * PWCCA = sum_i alpha_i rho_i / sum_i alpha_i. A direction without variance on the evaluation set,
 * or dependent there on the directions before it (a class the fold lacks), is left out of all three
 * numbers (CCA_HELD_OUT_TOL; the spec's "drop that direction"), and counted in `dropped`.
 * Must not: do I/O or MPI, or know what the views are. */
#pragma once
#include "moments.h"

#define CCA_MAX_TRIALS 16
#define CCA_MAX_EPS 8
/* Relative variance below which a canonical direction counts as absent from an evaluation set. */
#define CCA_HELD_OUT_TOL 1e-9

/* The two views inside z: x = z[x0, x0 + p), y = z[y0, y0 + q). */
typedef struct {
    int x0, p, y0, q;
} CcaViews;

typedef struct {
    int k;          /* canonical pairs */
    int nx, ny;     /* dimensions kept (variance >= eps) */
    int *ix, *iy;   /* (nx), (ny) their indices in z */
    double *ax;     /* (k, nx) */
    double *ay;     /* (k, ny) */
    double *rho;    /* (k) training canonical correlations, descending */
    int weight_x;   /* the weights come from view x */
} CcaFit;

typedef struct {
    double pwcca, mean_rho, rho1;
    int k;
    int dropped; /* directions left out on this evaluation set */
} CcaScore;

/* Fit on (n, m) (m: dim x dim). Returns k (0: nothing to correlate). */
int cca_fit(CcaFit *fit, int dim, double n, const double *m, CcaViews v, double eps_x, double eps_y, double tol);
void cca_fit_free(CcaFit *fit);
/* Score the fit on an evaluation co-moment m (dim x dim). Returns 0, or -1 when no canonical
 * direction varies on it. */
int cca_eval(const CcaFit *fit, int dim, const double *m, CcaScore *out);

typedef struct {
    int trials;        /* trial t: dev fold 2t, test fold 2t + 1, training = every other fold */
    const double *eps; /* grid for eps_x and eps_y: all n_eps^2 pairs, row-major (x outer); n_eps <= CCA_MAX_EPS */
    int n_eps;
    double null_tol;
} CcaProtocol;

typedef struct {
    int ok;                       /* 0: some trial had no canonical pair or failed to score */
    double pwcca, pwcca_std;      /* mean and sample standard deviation of the test PWCCAs */
    double mean_rho, rho1;        /* means over the trials */
    int k;                        /* canonical pairs of trial 0's chosen fit */
    int dropped;                  /* the most directions a test fold left out */
    double eps[CCA_MAX_TRIALS][2]; /* the chosen (eps_x, eps_y) of each trial */
    double trial[CCA_MAX_TRIALS]; /* each trial's test PWCCA */
    double n_train, n_dev, n_test; /* of trial 0 */
} CcaResult;

/* One trial of the protocol. */
typedef struct {
    double pwcca;                  /* the test fold's PWCCA (NaN: no canonical pair, or not scorable) */
    double mean_rho, rho1;         /* of the test fold */
    int k, dropped;                /* canonical pairs of the chosen fit; directions the test fold left out */
    double eps[2];                 /* the chosen (eps_x, eps_y) */
    double n_train, n_dev, n_test; /* units */
} CcaTrial;

/* Trial t (dev fold 2t, test fold 2t + 1, training every other fold): every eps pair fitted on the
 * training folds and scored on the dev fold; the fit of the first pair within 1e-12 of the best dev
 * PWCCA is scored on the test fold. Trials are independent (a caller may run them anywhere).
 * What no eps pair changes is computed once per trial (per eigendecomposition, and pair of them): the
 * training cross block B = V_xr^T S_xy V_yr and the dev fold's blocks in the same bases, V_r^T M_vv V_r,
 * V_xr^T M_xy V_yr and V_vr^T M_vv; a pair is then the SVD of D_x B D_y and products of k x r
 * matrices, scored as cca_eval would score its fit (the same numbers up to float reassociation), and
 * only the chosen pair's A_x, A_y are formed, for the test fold. */
CcaTrial cca_trial(const FoldStats *fs, CcaViews v, const CcaProtocol *pr, int t);
/* The result of trials 0 .. trials-1 (mean, sample standard deviation, trial 0's k and counts). */
CcaResult cca_combine(const CcaTrial *tr, int trials);
/* cca_trial for every trial, then cca_combine. Needs 2 * trials <= fs->folds. */
CcaResult cca_protocol(const FoldStats *fs, CcaViews v, const CcaProtocol *pr);
