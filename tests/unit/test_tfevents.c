/* test_tfevents.c — data/tfevents.c: CRC-32C and the masked CRC on known vectors, and the exact bytes
 * of a small event file (the file_version record and one scalar record). The expected bytes were made
 * by Python's protobuf (tests/reference/tfevents.proto) and crcmod's crc-32c, not by koe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../data/tfevents.h"

static void test_crc32c(void **state) {
    (void)state;
    assert_int_equal(tfevents_crc32c("123456789", 9), 0xe3069283u);
    uint8_t zeros[32] = {0};
    assert_int_equal(tfevents_crc32c(zeros, 32), 0x8a9136aau);
    assert_int_equal(tfevents_crc32c("", 0), 0);
    assert_int_equal(tfevents_masked_crc("123456789", 9), 0xc78ab0e5u); /* ((c >> 15) | (c << 17)) + 0xa282ead8 */
}

/* Event{wall_time: 1.5, file_version: "brain.Event:2"}, then Event{wall_time: 1.5, step: 7,
 * summary {value {tag: "loss", simple_value: 2.5}}}, each framed as a record. */
static const uint8_t golden[82] = {
    0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa3, 0x7f, 0x4b, 0x22, 0x09, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xf8, 0x3f, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69, 0x6e, 0x2e, 0x45, 0x76, 0x65, 0x6e, 0x74,
    0x3a, 0x32, 0x2a, 0x28, 0x64, 0x6c, 0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x9b, 0xd8,
    0x2d, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, 0x10, 0x07, 0x2a, 0x0d, 0x0a, 0x0b, 0x0a,
    0x04, 0x6c, 0x6f, 0x73, 0x73, 0x15, 0x00, 0x00, 0x20, 0x40, 0x78, 0x41, 0xdd, 0xb1,
};

static void test_record_bytes(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/test_tfevents.XXXXXX", getenv("KOE_TMP") ? getenv("KOE_TMP") : "/tmp");
    assert_non_null(mkdtemp(dir));
    KoeError err = {{0}};
    TfEvents *w = tfevents_open(dir, 1.5, &err);
    if (!w) fail_msg("%s", err.msg);
    assert_non_null(strstr(tfevents_path(w), "/events.out.tfevents.0000000001."));
    TfScalar v = {"loss", 2.5f};
    assert_int_equal(tfevents_scalars(w, 1.5, 7, &v, 1, &err), 0);
    char path[4300];
    snprintf(path, sizeof path, "%s", tfevents_path(w));
    /* a second file in the same directory and second gets a name that sorts after the first's */
    TfEvents *w2 = tfevents_open(dir, 1.5, &err);
    assert_non_null(w2);
    assert_true(strcmp(tfevents_path(w2), path) > 0);
    assert_non_null(strstr(tfevents_path(w2), "/events.out.tfevents.0000000002."));
    tfevents_close(w2);
    uint8_t got[200];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    const size_t n = fread(got, 1, sizeof got, f); /* written without closing: each record is on disk */
    fclose(f);
    tfevents_close(w);
    assert_int_equal(n, sizeof golden);
    assert_memory_equal(got, golden, sizeof golden);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_record_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
