/* pnmi.c — phone purity, cluster purity and PNMI from frame counts (pnmi.h).
 * Must not: do I/O or MPI. */
#include "pnmi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

void pnmi_counts_init(PnmiCounts *pc, int n_phones, int n_clusters) {
    KOE_ASSERT(n_phones > 0 && n_clusters > 0);
    pc->n_phones = n_phones;
    pc->n_clusters = n_clusters;
    pc->joint = koe_calloc((size_t)n_phones * n_clusters, sizeof(int64_t));
    pc->frames = 0;
}

void pnmi_counts_free(PnmiCounts *pc) {
    free(pc->joint);
    memset(pc, 0, sizeof *pc);
}

void pnmi_add(PnmiCounts *pc, const uint16_t *phone, const int32_t *label, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        KOE_ASSERT(phone[i] < pc->n_phones && label[i] >= 0 && label[i] < pc->n_clusters);
        pc->joint[(int64_t)phone[i] * pc->n_clusters + label[i]]++;
    }
    pc->frames += n;
}

PnmiResult pnmi_compute(const PnmiCounts *pc) {
    PnmiResult r;
    memset(&r, 0, sizeof r);
    r.frames = pc->frames;
    if (pc->frames == 0) return r;
    const int P = pc->n_phones, Z = pc->n_clusters;
    const double N = (double)pc->frames;
    double *py = koe_calloc((size_t)P, sizeof(double));
    double *pz = koe_calloc((size_t)Z, sizeof(double));
    double phone_pur = 0, cluster_pur = 0;
    for (int y = 0; y < P; y++) {
        int64_t best = 0;
        for (int z = 0; z < Z; z++) {
            int64_t n = pc->joint[(int64_t)y * Z + z];
            py[y] += (double)n;
            pz[z] += (double)n;
            if (n > best) best = n;
        }
        cluster_pur += (double)best;
    }
    for (int z = 0; z < Z; z++) {
        int64_t best = 0;
        for (int y = 0; y < P; y++)
            if (pc->joint[(int64_t)y * Z + z] > best) best = pc->joint[(int64_t)y * Z + z];
        phone_pur += (double)best;
    }
    double mi = 0, hy = 0, hz = 0;
    for (int y = 0; y < P; y++) {
        if (py[y] > 0) hy -= py[y] / N * log(py[y] / N);
        for (int z = 0; z < Z; z++) {
            double n = (double)pc->joint[(int64_t)y * Z + z];
            if (n > 0) mi += n / N * log(n * N / (py[y] * pz[z]));
        }
    }
    for (int z = 0; z < Z; z++)
        if (pz[z] > 0) hz -= pz[z] / N * log(pz[z] / N);
    free(py);
    free(pz);
    r.phone_purity = phone_pur / N;
    r.cluster_purity = cluster_pur / N;
    r.mutual_info = mi > 0 ? mi : 0;
    r.h_phone = hy;
    r.h_cluster = hz;
    r.pnmi = hy > 0 ? r.mutual_info / hy : 0;
    return r;
}
