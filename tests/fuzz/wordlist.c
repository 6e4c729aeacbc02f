/* wordlist.c — libFuzzer harness of `koe synth --words`' word-list reader (data/synth.c,
 * synth_wordlist_load): the input is the list (one word a line, '#' comments, UTF-8). A list that
 * loads must give utterance specs built from its words (synth_utt_spec), as koe synth does. */
#include "../../data/synth.h"
#include "fuzz_util.h"

FUZZ_INITIALIZE(NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("words.txt", data, size);
    SynthWordlist wl;
    KoeError err;
    if (synth_wordlist_load(&wl, path, &err) == 0) {
        for (int64_t i = 0; i < 4; i++) {
            SynthUttSpec s;
            char id[256];
            synth_utt_spec(&s, 1234, 0, i, &wl);
            synth_utt_id(id, sizeof id, &s);
            synth_utt_spec_free(&s);
        }
        synth_wordlist_free(&wl);
    }
    return 0;
}
