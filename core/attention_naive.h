/* attention_naive.h — the naive double-precision reference of attention_forward/attention_backward
 * (layers.h), for tests only: plain loops, same semantics (key padding, all-padded utterances,
 * dropout stream and mask layout), no BLAS, no threads. */
#pragma once
#include <stdint.h>

#include "layers.h"

/* out (B, T, C), att (B, H, T, T), qkv (B, T, 3C), key_pad (B, T) or NULL; drop may be NULL. */
void attention_forward_naive(double *out, double *att, const double *qkv, const uint8_t *key_pad, int B, int64_t T,
                             int C, int H, const AttentionDropout *drop);
/* dqkv (B, T, 3C) += gradient of sum(out * dout) with respect to qkv. */
void attention_backward_naive(double *dqkv, const double *dout, const double *qkv, const double *att,
                              const uint8_t *key_pad, int B, int64_t T, int C, int H, const AttentionDropout *drop);
/* 1 if key j of query row i in head h of utterance b survives attention dropout, else 0. */
int attention_keep_naive(const AttentionDropout *drop, int b, int h, int64_t i, int64_t j);
