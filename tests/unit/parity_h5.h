/* parity_h5.h — reading a PyTorch reference file (tests/reference/NAME_ref.py) in a cmocka test: arrays
 * by path and name, and the parity check of a koe tensor against one (parity.h's rule), failing the
 * test with the worst element. Include after cmocka.h and h5util.h. */
#pragma once
#include <stdio.h>
#include <stdlib.h>

#include "parity.h"

/* n elements of path/name in grp (any HDF5 type read as type, size bytes each); fails the test if absent. */
static inline void *ref_read(hid_t grp, const char *path, const char *name, hid_t type, size_t size, int64_t n) {
    void *v;
    KoeError err;
    if (h5_read_array(grp, path, name, type, size, n, &v, NULL, &err) < 0) fail_msg("%s", err.msg);
    return v;
}

/* got (n floats) against path/name; the line printed and the failure name the case cname. */
static inline void ref_check(hid_t grp, const char *path, const char *cname, const char *name, const float *got,
                             int64_t n) {
    float *ref = ref_read(grp, path, name, H5T_NATIVE_FLOAT, sizeof(float), n);
    char what[160];
    snprintf(what, sizeof what, "%s %s", cname, name);
    ParityResult r;
    if (!parity_check(what, got, ref, n, &r))
        fail_msg("%s: worst element %lld: koe %.8g, torch %.8g (error %.3e > %.3e)", what, (long long)r.at, got[r.at],
                 ref[r.at], r.worst, r.tol);
    free(ref);
}
