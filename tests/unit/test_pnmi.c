/* test_pnmi.c — analysis/pnmi on hand-made joint distributions with known values: labels equal
 * to the phones (purities 1, PNMI 1), labels independent of the phones (PNMI 0, purities the
 * largest marginals), one cluster for everything, a worked 2x2 example computed by hand,
 * frame-by-frame counting equal to the table it should build, and analysis/label_join: 50 Hz labels
 * repeated to the 100 Hz alignment, shard phone ids mapped by name, frames without a phone or past
 * the last label skipped. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../analysis/label_join.h"
#include "../../analysis/pnmi.h"

static PnmiResult from_table(const int64_t *joint, int P, int Z) {
    PnmiCounts pc;
    pnmi_counts_init(&pc, P, Z);
    for (int i = 0; i < P * Z; i++) pc.frames += pc.joint[i] = joint[i];
    PnmiResult r = pnmi_compute(&pc);
    pnmi_counts_free(&pc);
    return r;
}

static void test_perfect_labels(void **state) {
    (void)state;
    /* 3 phones, 5 clusters; each phone maps to one cluster (a permutation), unequal counts */
    int64_t j[15] = {0};
    j[0 * 5 + 3] = 10, j[1 * 5 + 0] = 25, j[2 * 5 + 4] = 5;
    PnmiResult r = from_table(j, 3, 5);
    assert_true(fabs(r.phone_purity - 1) < 1e-12);
    assert_true(fabs(r.cluster_purity - 1) < 1e-12);
    assert_true(fabs(r.pnmi - 1) < 1e-12);
    assert_int_equal(r.frames, 40);
}

static void test_independent_labels(void **state) {
    (void)state;
    /* p(y, z) = p(y) p(z) with p(y) = (0.5, 0.3, 0.2), p(z) = (0.6, 0.4): counts x 1000 */
    const double py[3] = {0.5, 0.3, 0.2}, pz[2] = {0.6, 0.4};
    int64_t j[6];
    for (int y = 0; y < 3; y++)
        for (int z = 0; z < 2; z++) j[y * 2 + z] = (int64_t)llround(1000 * py[y] * pz[z]);
    PnmiResult r = from_table(j, 3, 2);
    assert_true(fabs(r.pnmi) < 1e-12);
    assert_true(fabs(r.mutual_info) < 1e-12);
    /* phone purity = sum_z max_y p(y, z) = 0.5 * (0.6 + 0.4); cluster purity = sum_y p(y) * 0.6 */
    assert_true(fabs(r.phone_purity - 0.5) < 1e-12);
    assert_true(fabs(r.cluster_purity - 0.6) < 1e-12);
}

static void test_one_cluster(void **state) {
    (void)state;
    const int64_t j[4] = {30, 0, 70, 0}; /* 2 phones x 2 clusters, every frame in cluster 0 */
    PnmiResult r = from_table(j, 2, 2);
    assert_true(fabs(r.pnmi) < 1e-12);
    assert_true(fabs(r.phone_purity - 0.7) < 1e-12);
    assert_true(fabs(r.cluster_purity - 1) < 1e-12);
}

static void test_worked_example(void **state) {
    (void)state;
    /* p = [[0.4, 0.1], [0.2, 0.3]] (rows phones). p(y) = (0.5, 0.5), p(z) = (0.6, 0.4).
     * I = sum p log(p / (py pz)); H(y) = ln 2. phone purity = 0.4 + 0.3; cluster purity = 0.4 + 0.3. */
    int64_t j[4] = {4, 1, 2, 3};
    PnmiResult r = from_table(j, 2, 2);
    double I = 0.4 * log(0.4 / 0.3) + 0.1 * log(0.1 / 0.2) + 0.2 * log(0.2 / 0.3) + 0.3 * log(0.3 / 0.2);
    assert_true(fabs(r.mutual_info - I) < 1e-12);
    assert_true(fabs(r.pnmi - I / log(2)) < 1e-12);
    assert_true(fabs(r.phone_purity - 0.7) < 1e-12);
    assert_true(fabs(r.cluster_purity - 0.7) < 1e-12);
    assert_true(fabs(r.h_phone - log(2)) < 1e-12);
    assert_true(fabs(r.h_cluster - (-0.6 * log(0.6) - 0.4 * log(0.4))) < 1e-12);
}

static void test_counting(void **state) {
    (void)state;
    const uint16_t ph[10] = {0, 0, 1, 1, 1, 0, 1, 0, 1, 1};
    const int32_t lab[10] = {2, 2, 0, 0, 1, 2, 0, 1, 0, 0};
    PnmiCounts pc;
    pnmi_counts_init(&pc, 2, 3);
    pnmi_add(&pc, ph, lab, 6);
    pnmi_add(&pc, ph + 6, lab + 6, 4);
    const int64_t want[6] = {0, 1, 3, 5, 1, 0};
    assert_memory_equal(pc.joint, want, sizeof want);
    assert_int_equal(pc.frames, 10);
    PnmiResult r = pnmi_compute(&pc);
    PnmiResult t = from_table(want, 2, 3);
    assert_true(r.pnmi == t.pnmi && r.phone_purity == t.phone_purity && r.cluster_purity == t.cluster_purity);
    /* phone purity: clusters 0 (5 of phone 1), 1 (1 vs 1), 2 (3 of phone 0) -> 9/10 */
    assert_true(fabs(r.phone_purity - 0.9) < 1e-12);
    pnmi_counts_free(&pc);
    PnmiCounts empty;
    pnmi_counts_init(&empty, 2, 2);
    PnmiResult e = pnmi_compute(&empty);
    assert_true(e.frames == 0 && e.pnmi == 0 && e.phone_purity == 0);
    pnmi_counts_free(&empty);
}

static void test_label_join(void **state) {
    (void)state;
    PhoneInventory inv = {0};
    /* shard A lists "a", "b"; shard B lists "b", "c", "a": names map to one inventory */
    const char *la[2] = {"a", "b"}, *lb[3] = {"b", "c", "a"};
    int ma[2], mb[3];
    for (int i = 0; i < 2; i++) ma[i] = phone_inventory_index(&inv, la[i]);
    for (int i = 0; i < 3; i++) mb[i] = phone_inventory_index(&inv, lb[i]);
    assert_int_equal(inv.n, 3);
    assert_true(ma[0] == 0 && ma[1] == 1 && mb[0] == 1 && mb[1] == 2 && mb[2] == 0);
    PnmiCounts pc;
    pnmi_counts_init(&pc, inv.n, 4);
    const uint16_t NO = 0xFFFF;
    /* shard A, 50 Hz labels: alignment frame j takes label j / 2; frame 2 has no phone; frames 6, 7
     * lie past the 3 labels */
    const uint16_t al_a[8] = {0, 0, NO, 1, 1, 1, 0, 0};
    const int32_t lab_a[3] = {3, 1, 2};
    assert_int_equal(label_join_count(&pc, al_a, 8, NO, ma, lab_a, 3, 50.0), 3);
    /* shard B, 100 Hz labels: one to one */
    const uint16_t al_b[3] = {2, 1, 0};
    const int32_t lab_b[3] = {0, 0, 3};
    assert_int_equal(label_join_count(&pc, al_b, 3, NO, mb, lab_b, 3, 100.0), 0);
    /* rows phones a, b, c; columns labels 0..3 */
    const int64_t want[12] = {1, 0, 0, 2,  /* a: A frames 0, 1 -> label 3; B frame 0 (id 2) -> 0 */
                              0, 1, 2, 1,  /* b: A frame 3 -> 1, frames 4, 5 -> 2; B frame 2 (id 0) -> 3 */
                              1, 0, 0, 0}; /* c: B frame 1 (id 1) -> 0 */
    assert_memory_equal(pc.joint, want, sizeof want);
    assert_int_equal(pc.frames, 8);
    pnmi_counts_free(&pc);
    phone_inventory_free(&inv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perfect_labels),
        cmocka_unit_test(test_independent_labels),
        cmocka_unit_test(test_one_cluster),
        cmocka_unit_test(test_worked_example),
        cmocka_unit_test(test_counting),
        cmocka_unit_test(test_label_join),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
