/* test_synth.c — data/synth.c: an utterance's audio does not depend on what the process spoke
 * before (espeak-ng keeps state across calls; synth_render isolates each utterance), specs are a
 * pure function of (seed, language, index), phone segments tile [0, end of audio], and bad word
 * lists are refused naming file and line. Word lists come from $KOE_ROOT/data/wordlists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../data/synth.h"

static char wl_path[512];
static SynthWordlist wl_en, wl_de;

static void load(SynthWordlist *wl, const char *code) {
    const char *root = getenv("KOE_ROOT") ? getenv("KOE_ROOT") : ".";
    KoeError err;
    snprintf(wl_path, sizeof wl_path, "%s/data/wordlists/%s.txt", root, code);
    if (synth_wordlist_load(wl, wl_path, &err)) fail_msg("%s", err.msg);
}

static int setup(void **state) {
    (void)state;
    int ok[64];
    KoeError err;
    if (synth_init(ok, &err)) fail_msg("%s", err.msg);
    for (int l = 0; l < synth_n_langs; l++)
        if (!ok[l]) fail_msg("espeak-ng voice %s missing", synth_langs[l].voice);
    load(&wl_en, "en");
    load(&wl_de, "de");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    synth_wordlist_free(&wl_en);
    synth_wordlist_free(&wl_de);
    return 0;
}

static void render(uint64_t seed, int lang, int64_t index, const SynthWordlist *wl, SynthUtt *u) {
    SynthUttSpec s;
    KoeError err;
    synth_utt_spec(&s, seed, lang, index, wl);
    if (synth_render(&s, u, &err)) fail_msg("%s", err.msg);
    synth_utt_spec_free(&s);
}

static void assert_same_utt(const SynthUtt *a, const SynthUtt *b) {
    assert_int_equal(a->n_samples, b->n_samples);
    assert_memory_equal(a->audio, b->audio, (size_t)a->n_samples * sizeof *a->audio);
    assert_int_equal(a->n_phones, b->n_phones);
    assert_memory_equal(a->phones, b->phones, (size_t)a->n_phones * sizeof *a->phones);
}

/* The same utterance first, after other utterances, and after another language. */
static void test_history_independent(void **state) {
    (void)state;
    int en = synth_lang_find("en"), de = synth_lang_find("de");
    SynthUtt a, x, y, b;
    render(5, en, 3, &wl_en, &a);
    render(5, de, 0, &wl_de, &x);
    render(5, en, 4, &wl_en, &y);
    render(5, en, 3, &wl_en, &b);
    assert_same_utt(&a, &b);
    synth_utt_free(&a);
    synth_utt_free(&b);
    synth_utt_free(&x);
    synth_utt_free(&y);
}

static void test_spec_pure_and_varied(void **state) {
    (void)state;
    int en = synth_lang_find("en");
    int variants_seen = 0, rates_differ = 0;
    char first_variant[4] = "";
    for (int64_t k = 0; k < 40; k++) {
        SynthUttSpec s1, s2;
        synth_utt_spec(&s1, 9, en, k, &wl_en);
        synth_utt_spec(&s2, 9, en, k, &wl_en);
        assert_string_equal(s1.text, s2.text);
        assert_string_equal(s1.variant, s2.variant);
        assert_int_equal(s1.rate, s2.rate);
        assert_true(s1.rate >= 130 && s1.rate <= 220 && s1.pitch >= 30 && s1.pitch <= 70);
        assert_true(s1.range >= 20 && s1.range <= 80);
        int words = 1;
        for (const char *c = s1.text; *c; c++) words += *c == ' ';
        assert_true(words >= SYNTH_MIN_WORDS && words <= SYNTH_MAX_WORDS);
        if (k == 0) snprintf(first_variant, sizeof first_variant, "%s", s1.variant);
        else variants_seen += strcmp(first_variant, s1.variant) != 0;
        SynthUttSpec o;
        synth_utt_spec(&o, 10, en, k, &wl_en);
        rates_differ += o.rate != s1.rate || strcmp(o.text, s1.text) != 0;
        char id[64];
        synth_utt_id(id, sizeof id, &s1);
        char want[64];
        snprintf(want, sizeof want, "en/en-%06lld-%s", (long long)k, s1.variant);
        assert_string_equal(id, want);
        synth_utt_spec_free(&s1);
        synth_utt_spec_free(&s2);
        synth_utt_spec_free(&o);
    }
    assert_true(variants_seen > 20);
    assert_true(rates_differ > 35);
}

static void test_phones_tile_audio(void **state) {
    (void)state;
    for (int l = 0; l < 2; l++) {
        SynthUtt u;
        render(1, l == 0 ? synth_lang_find("en") : synth_lang_find("de"), 7, l == 0 ? &wl_en : &wl_de, &u);
        assert_true(u.n_samples > KOE_SAMPLE_RATE / 2);
        assert_true(u.n_phones >= 8);
        assert_int_equal(u.phones[0].start_ms, 0);
        for (int64_t i = 0; i < u.n_phones; i++) {
            assert_true(u.phones[i].end_ms > u.phones[i].start_ms);
            assert_true(u.phones[i].phone[0] && !strchr(u.phones[i].phone, ' '));
            if (i) assert_int_equal(u.phones[i].start_ms, u.phones[i - 1].end_ms);
        }
        int64_t end_ms = (u.n_samples * 1000 + KOE_SAMPLE_RATE / 2) / KOE_SAMPLE_RATE;
        assert_int_equal(u.phones[u.n_phones - 1].end_ms, end_ms);
        synth_utt_free(&u);
    }
}

static void expect_refused(const char *content, const char *what) {
    char path[] = "/tmp/koe-test-wordlist-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    SynthWordlist wl;
    KoeError err;
    assert_int_equal(synth_wordlist_load(&wl, path, &err), -1);
    if (!strstr(err.msg, what) || !strstr(err.msg, path)) fail_msg("message '%s' lacks '%s' or the path", err.msg, what);
    unlink(path);
}

static void test_bad_wordlists(void **state) {
    (void)state;
    char many[4096] = "# comment with spaces is fine\n";
    for (int i = 0; i < 60; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "w%d\n", i);
    char spaced[4200], badutf[4200];
    snprintf(spaced, sizeof spaced, "%stwo words\n", many);
    snprintf(badutf, sizeof badutf, "%sbad\xC3\x28\n", many);
    expect_refused("a\nb\n", "need at least");
    expect_refused(spaced, ":62: 'two words' has white space");
    expect_refused(badutf, ":62: not valid UTF-8");
    SynthWordlist wl;
    KoeError err;
    assert_int_equal(synth_wordlist_load(&wl, "/nonexistent/xx.txt", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/xx.txt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history_independent),
        cmocka_unit_test(test_spec_pure_and_varied),
        cmocka_unit_test(test_phones_tile_audio),
        cmocka_unit_test(test_bad_wordlists),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
