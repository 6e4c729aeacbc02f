/* pnmi.h — label quality against phone alignments, as in the HuBERT paper (Hsu et al. 2021,
 * section IV-G): from the joint distribution p(y, z) of phones y and cluster labels z over frames,
 *   phone purity   = E_z [max_y p(y|z)] = sum_z max_y p(y, z)
 *   cluster purity = E_y [max_z p(z|y)] = sum_y max_z p(y, z)
 *   PNMI           = I(y; z) / H(y)     (phone-normalised mutual information)
 * Counts are accumulated frame by frame (int64), then turned into the three numbers.
 * Must not: do I/O, call MPI, or know how labels or alignments are stored. */
#pragma once
#include <stdint.h>

typedef struct {
    int n_phones, n_clusters;
    int64_t *joint; /* (n_phones, n_clusters) frame counts */
    int64_t frames;
} PnmiCounts;

typedef struct {
    double phone_purity, cluster_purity, pnmi;
    double h_phone, h_cluster, mutual_info; /* nats */
    int64_t frames;
} PnmiResult;

void pnmi_counts_init(PnmiCounts *pc, int n_phones, int n_clusters);
void pnmi_counts_free(PnmiCounts *pc);
/* Count n aligned frames: phone[i] (< n_phones) with label[i] (< n_clusters). */
void pnmi_add(PnmiCounts *pc, const uint16_t *phone, const int32_t *label, int64_t n);
/* The three measures of the counts. frames == 0 gives zeros; a single phone (H(y) = 0) gives pnmi 0. */
PnmiResult pnmi_compute(const PnmiCounts *pc);
