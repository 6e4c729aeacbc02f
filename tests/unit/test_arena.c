/* test_arena.c — the arena carver of common.h: one list of views measured and then bound gives the
 * same size, 16-float aligned disjoint views in order, and taking past the arena's end is fatal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "../../core/common.h"

/* views of 5, 0, 16 and 17 floats */
static const int64_t sizes[] = {5, 0, 16, 17};
enum { NV = sizeof sizes / sizeof *sizes };

static void carve(Arena *ar, float **v) {
    for (int i = 0; i < NV; i++) v[i] = arena_take(ar, sizes[i]);
}

static void test_measure_then_bind(void **state) {
    (void)state;
    float *v[NV];
    Arena m = arena_measure();
    carve(&m, v);
    for (int i = 0; i < NV; i++) assert_null(v[i]);
    assert_int_equal(m.used, 16 + 0 + 16 + 32);
    float *mem = koe_malloc((size_t)m.used * sizeof(float));
    Arena b = arena_over(mem, m.used);
    carve(&b, v);
    assert_int_equal(b.used, m.used);
    int64_t off = 0;
    for (int i = 0; i < NV; i++) {
        assert_ptr_equal(v[i], mem + off);
        off += (sizes[i] + 15) / 16 * 16;
    }
    free(mem);
}

static jmp_buf fatal_jump;
static void fatal_to_test(int code) { longjmp(fatal_jump, code); }

static void test_past_the_end_is_fatal(void **state) {
    (void)state;
    float mem[48];
    Arena a = arena_over(mem, 48);
    assert_ptr_equal(arena_take(&a, 32), mem);
    koe_set_fatal_hook(fatal_to_test);
    int code = setjmp(fatal_jump);
    if (code == 0) {
        arena_take(&a, 17); /* 32 more floats: 64 > 48 */
        fail_msg("taking past the end returned");
    }
    koe_set_fatal_hook(NULL);
    assert_int_equal(code, KOE_EXIT_INTERNAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_measure_then_bind),
        cmocka_unit_test(test_past_the_end_is_fatal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
