/* shard.c — write and read one corpus shard (layout in shard.h and data/README.md, Corpus).
 * The writer appends audio in whole chunks to an extendible dataset, so memory stays bounded for
 * a multi-GB shard, and publishes the file by rename only once it is complete. The reader trusts
 * nothing in the file: every table is checked before anyone indexes with it.
 * Must not: know about corpora, languages or MPI; hold h5_lock() across calls. */
#include "shard.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"
#include "zstd_filter.h"

/* Reader chunk cache per open shard: 8 raw chunks (1 MB). A 250k-sample crop touches at most 5
 * chunks, so a crop and the start of the next one from the same region stay decoded. Not more:
 * a training run keeps every shard of the corpus open (hundreds), each with its own cache. */
#define SHARD_CACHE_BYTES (8 * SHARD_CHUNK_SAMPLES * 2)
#define SHARD_CACHE_SLOTS 101 /* prime, ~10x the chunks it holds, as the HDF5 guide advises */

/* ---- small helpers --------------------------------------------------------------------------- */

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard_audio_checksum reads the samples' bytes as little-endian words"
#endif
/* A word at a time (one multiply per 8 bytes, ~30x the speed of byte-wise FNV-1a, next to zstd's
 * decoding it is nothing); any one changed word always changes the result (xor, then a multiply by
 * an odd number, are both one-to-one). */
uint64_t shard_audio_checksum(const int16_t *pcm, int64_t n) {
    const unsigned char *b = (const unsigned char *)pcm;
    const size_t bytes = (size_t)n * sizeof *pcm;
    uint64_t h = KOE_FNV_OFFSET, w;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        memcpy(&w, b + i, 8);
        h = (h ^ w) * KOE_FNV_PRIME;
    }
    if (i < bytes) {
        w = 0;
        memcpy(&w, b + i, bytes - i);
        h = (h ^ w) * KOE_FNV_PRIME;
    }
    return h;
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct ShardWriter {
    char *path, *tmp;
    hid_t file, audio;
    int64_t chunk;        /* samples per HDF5 chunk */
    int16_t *buf;         /* (chunk) samples not yet written */
    int64_t buf_n;
    int64_t written;      /* samples already in /audio */
    int64_t n, cap;       /* utterances */
    int64_t *offset, *length;
    uint64_t *checksum;   /* (n) shard_audio_checksum of each utterance */
    char **id, **lang, **speaker, **source;
    int n_phones;
    char **phones;
    uint16_t *frames;     /* (n_frames) alignments of all utterances */
    int64_t n_frames, frames_cap;
    int64_t *align_offset; /* (n + 1) */
};

static void writer_free(ShardWriter *w) {
    for (int64_t i = 0; i < w->n; i++) {
        free(w->id[i]);
        free(w->lang[i]);
        free(w->speaker[i]);
        free(w->source[i]);
    }
    free(w->id);
    free(w->lang);
    free(w->speaker);
    free(w->source);
    free(w->offset);
    free(w->length);
    free(w->checksum);
    for (int i = 0; i < w->n_phones; i++) free(w->phones[i]);
    free(w->phones);
    free(w->frames);
    free(w->align_offset);
    free(w->buf);
    free(w->path);
    free(w->tmp);
    free(w);
}

static void writer_close_h5(ShardWriter *w) {
    if (w->audio >= 0) H5Dclose(w->audio);
    if (w->file >= 0) H5Fclose(w->file);
    w->audio = w->file = -1;
}

static hid_t audio_create(hid_t file, int level, int64_t chunk) {
    hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, cdims[1] = {(hsize_t)chunk};
    unsigned cd[1] = {(unsigned)level};
    hid_t space = H5Screate_simple(1, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, cdims) >= 0 && H5Pset_shuffle(dcpl) >= 0 &&
        H5Pset_filter(dcpl, KOE_ZSTD_FILTER_ID, H5Z_FLAG_MANDATORY, 1, cd) >= 0 && H5Pset_fletcher32(dcpl) >= 0)
        d = H5Dcreate2(file, "audio", H5T_STD_I16LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return d;
}

ShardWriter *shard_writer_create_opts(const char *path, char *const *phones, int n_phones, int zstd_level,
                                      int64_t chunk_samples, KoeError *err) {
    KOE_ASSERT(chunk_samples > 0 && n_phones >= 0 && (n_phones == 0 || phones));
    if (zstd_level < 1 || zstd_level > 22) {
        koe_error_set(err, "%s: zstd level %d is out of range (1..22)", path, zstd_level);
        return NULL;
    }
    if (n_phones >= SHARD_NO_PHONE) {
        koe_error_set(err, "%s: %d phones do not fit the uint16 alignment (at most %d)", path, n_phones,
                      SHARD_NO_PHONE - 1);
        return NULL;
    }
    for (int i = 0; i < n_phones; i++)
        if (!phones[i] || !phones[i][0]) {
            koe_error_set(err, "%s: phone %d of the inventory is empty", path, i);
            return NULL;
        }
    ShardWriter *w = koe_calloc(1, sizeof *w);
    w->path = koe_strdup(path);
    size_t tn = strlen(path) + 5;
    w->tmp = koe_malloc(tn);
    snprintf(w->tmp, tn, "%s.tmp", path);
    w->chunk = chunk_samples;
    w->buf = koe_malloc((size_t)chunk_samples * sizeof *w->buf);
    w->n_phones = n_phones;
    if (n_phones > 0) {
        w->phones = koe_malloc((size_t)n_phones * sizeof *w->phones);
        for (int i = 0; i < n_phones; i++) w->phones[i] = koe_strdup(phones[i]);
    }
    w->audio = -1;
    h5_lock();
    w->file = h5_create(w->tmp);
    if (w->file < 0) {
        koe_error_set(err, "%s: cannot create: %s (is the directory there and writable?)", w->tmp, h5_last_error());
    } else if ((w->audio = audio_create(w->file, zstd_level, chunk_samples)) < 0) {
        koe_error_set(err, "%s: cannot create /audio: %s", w->tmp, h5_last_error());
    }
    int ok = w->audio >= 0;
    if (!ok) {
        koe_error_fs(err, w->tmp);
        writer_close_h5(w);
        unlink(w->tmp);
    } else {
        koe_output_begin(w->tmp);
    }
    h5_unlock();
    if (!ok) {
        writer_free(w);
        return NULL;
    }
    return w;
}

ShardWriter *shard_writer_create(const char *path, char *const *phones, int n_phones, KoeError *err) {
    return shard_writer_create_opts(path, phones, n_phones, SHARD_ZSTD_LEVEL, SHARD_CHUNK_SAMPLES, err);
}

/* Append the buffered samples to /audio (called with h5_lock held). */
static int writer_flush_buf(ShardWriter *w, KoeError *err) {
    if (w->buf_n == 0) return 0;
    hsize_t size[1] = {(hsize_t)(w->written + w->buf_n)};
    hsize_t start[1] = {(hsize_t)w->written}, count[1] = {(hsize_t)w->buf_n};
    int rc = -1;
    if (H5Dset_extent(w->audio, size) < 0)
        return koe_error_set(err, "%s: cannot extend /audio to %lld samples: %s", w->tmp, (long long)size[0],
                             h5_last_error());
    hid_t fs = H5Dget_space(w->audio);
    hid_t ms = H5Screate_simple(1, count, NULL);
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
        H5Dwrite(w->audio, H5T_NATIVE_INT16, ms, fs, H5P_DEFAULT, w->buf) >= 0)
        rc = 0;
    else {
        koe_error_set(err, "%s: cannot write audio: %s", w->tmp, h5_last_error());
        koe_error_fs(err, w->tmp);
    }
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (rc == 0) {
        w->written += w->buf_n;
        w->buf_n = 0;
        h5_output_data(w->audio, w->tmp); /* test hook */
    }
    return rc;
}

int shard_writer_add(ShardWriter *w, const char *id, const char *lang, const char *speaker,
                     const char *source, const int16_t *pcm, int64_t n, const uint16_t *align,
                     int64_t n_align, KoeError *err) {
    if (!id || !id[0]) return koe_error_set(err, "%s: utterance %lld has an empty id", w->path, (long long)w->n);
    if (n <= 0) return koe_error_set(err, "%s: utterance '%s' has no samples", w->path, id);
    if (align && w->n_phones == 0)
        return koe_error_set(err, "%s: utterance '%s' has an alignment but the shard was created without "
                                  "a phone inventory", w->path, id);
    if (n_align < 0 || (!align && n_align != 0))
        return koe_error_set(err, "%s: utterance '%s': bad alignment length %lld", w->path, id, (long long)n_align);
    for (int64_t f = 0; f < n_align; f++)
        if (align[f] >= w->n_phones && align[f] != SHARD_NO_PHONE)
            return koe_error_set(err, "%s: utterance '%s': frame %lld has phone %u, the inventory has %d",
                                 w->path, id, (long long)f, (unsigned)align[f], w->n_phones);

    int64_t offset = w->written + w->buf_n;
    int rc = 0;
    h5_lock();
    for (int64_t done = 0; done < n && rc == 0;) {
        int64_t take = w->chunk - w->buf_n;
        if (take > n - done) take = n - done;
        memcpy(w->buf + w->buf_n, pcm + done, (size_t)take * sizeof *pcm);
        w->buf_n += take;
        done += take;
        if (w->buf_n == w->chunk) rc = writer_flush_buf(w, err);
    }
    h5_unlock();
    if (rc < 0) return -1;

    if (w->n + 2 > w->cap) { /* +2: align_offset holds n + 1 entries */
        w->cap = w->cap ? 2 * w->cap : 64;
        size_t c = (size_t)w->cap;
        w->offset = koe_realloc(w->offset, c * sizeof *w->offset);
        w->length = koe_realloc(w->length, c * sizeof *w->length);
        w->checksum = koe_realloc(w->checksum, c * sizeof *w->checksum);
        w->id = koe_realloc(w->id, c * sizeof *w->id);
        w->lang = koe_realloc(w->lang, c * sizeof *w->lang);
        w->speaker = koe_realloc(w->speaker, c * sizeof *w->speaker);
        w->source = koe_realloc(w->source, c * sizeof *w->source);
        w->align_offset = koe_realloc(w->align_offset, c * sizeof *w->align_offset);
    }
    w->offset[w->n] = offset;
    w->length[w->n] = n;
    w->checksum[w->n] = shard_audio_checksum(pcm, n);
    w->id[w->n] = koe_strdup(id);
    w->lang[w->n] = koe_strdup(lang && lang[0] ? lang : "und");
    w->speaker[w->n] = koe_strdup(speaker ? speaker : "");
    w->source[w->n] = koe_strdup(source ? source : "");
    if (n_align > 0) {
        if (w->n_frames + n_align > w->frames_cap) {
            while (w->n_frames + n_align > w->frames_cap) w->frames_cap = w->frames_cap ? 2 * w->frames_cap : 4096;
            w->frames = koe_realloc(w->frames, (size_t)w->frames_cap * sizeof *w->frames);
        }
        memcpy(w->frames + w->n_frames, align, (size_t)n_align * sizeof *align);
        w->n_frames += n_align;
    }
    w->align_offset[0] = 0;
    w->align_offset[w->n + 1] = w->n_frames;
    w->n++;
    return 0;
}

int64_t shard_writer_bytes(const ShardWriter *w) { return (w->written + w->buf_n) * (int64_t)sizeof(int16_t); }
int64_t shard_writer_utts(const ShardWriter *w) { return w->n; }

/* Tables and attributes (h5_lock held). */
static int writer_write_tables(ShardWriter *w) {
    hid_t g = H5Gcreate2(w->file, "utt", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    int rc = h5_write_array(g, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, w->offset, w->n) |
             h5_write_array(g, "length", H5T_STD_I64LE, H5T_NATIVE_INT64, w->length, w->n) |
             h5_write_array(g, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, w->checksum, w->n) |
             h5_write_strings(g, "id", w->id, w->n) | h5_write_strings(g, "lang", w->lang, w->n) |
             h5_write_strings(g, "speaker", w->speaker, w->n) | h5_write_strings(g, "source", w->source, w->n);
    H5Gclose(g);
    if (rc < 0) return -1;
    if (w->n_phones > 0) {
        int64_t zero = 0;
        g = H5Gcreate2(w->file, "align", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) return -1;
        rc = h5_write_strings(g, "phones", w->phones, w->n_phones) |
             h5_write_array(g, "frames", H5T_STD_U16LE, H5T_NATIVE_UINT16, w->frames, w->n_frames) |
             h5_write_array(g, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, w->n ? w->align_offset : &zero, w->n + 1);
        H5Gclose(g);
        if (rc < 0) return -1;
    }
    /* format last: a file without it is refused by every reader */
    return h5_attr_write_i64(w->file, "sample_rate", KOE_SAMPLE_RATE) |
           h5_attr_write_i64(w->file, "n_utts", w->n) | h5_attr_write_i64(w->file, "samples", w->written) |
           h5_attr_write_i64(w->file, "format_version", SHARD_FORMAT_VERSION) |
           h5_attr_write_str(w->file, "format", SHARD_FORMAT);
}

int shard_writer_finish(ShardWriter *w, KoeError *err) {
    int rc = -1;
    h5_lock();
    if (writer_flush_buf(w, err) == 0) {
        if (writer_write_tables(w) < 0)
            koe_error_set(err, "%s: cannot write the utterance tables: %s", w->tmp, h5_last_error());
        else if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
            koe_error_set(err, "%s: cannot flush: %s", w->tmp, h5_last_error());
        else
            rc = 0;
    }
    hid_t audio = w->audio, file = w->file;
    w->audio = w->file = -1;
    if (audio >= 0 && H5Dclose(audio) < 0 && rc == 0) rc = koe_error_set(err, "%s: cannot close /audio", w->tmp);
    if (file >= 0 && H5Fclose(file) < 0 && rc == 0)
        rc = koe_error_set(err, "%s: cannot close: %s", w->tmp, h5_last_error());
    h5_unlock();
    if (rc == 0) rc = koe_publish_file(w->tmp, w->path, err);
    if (rc < 0) koe_error_fs(err, w->tmp);
    koe_output_end(w->tmp);
    if (rc < 0) unlink(w->tmp);
    writer_free(w);
    return rc;
}

void shard_writer_abort(ShardWriter *w) {
    if (!w) return;
    h5_lock();
    writer_close_h5(w);
    h5_unlock();
    koe_output_end(w->tmp);
    unlink(w->tmp);
    writer_free(w);
}

/* ---- reader ---------------------------------------------------------------------------------- */

static int read_strings_n(hid_t loc, const char *path, const char *name, int64_t n, char ***out, KoeError *err) {
    int64_t got;
    if (h5_read_strings(loc, path, name, n, 0, out, &got, err) < 0) return -1;
    if (got != n) {
        h5_strings_free(*out, got);
        *out = NULL;
        return koe_error_set(err, "%s: '%s' has %lld entries, expected %lld", path, name, (long long)got, (long long)n);
    }
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Ids must be non-empty and unique: labels and features are keyed by them. */
static int check_ids(const CorpusShard *s, KoeError *err) {
    for (int64_t i = 0; i < s->n; i++)
        if (!s->id[i][0]) return koe_error_set(err, "%s: utterance %lld has an empty id", s->path, (long long)i);
    char **sorted = koe_malloc((size_t)(s->n ? s->n : 1) * sizeof *sorted);
    memcpy(sorted, s->id, (size_t)s->n * sizeof *sorted);
    qsort(sorted, (size_t)s->n, sizeof *sorted, cmp_str_ptr);
    int rc = 0;
    for (int64_t i = 1; i < s->n && rc == 0; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            rc = koe_error_set(err, "%s: utterance id '%s' appears twice", s->path, sorted[i]);
    free(sorted);
    return rc;
}

static int check_audio(CorpusShard *s, KoeError *err) {
    hid_t a = (hid_t)s->hid_audio;
    hid_t sp = H5Dget_space(a), ft = H5Dget_type(a);
    int rc = -1;
    hsize_t len = 0;
    /* exactly little-endian int16: a moved bit offset or precision is still a 2-byte signed integer */
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Tequal(ft, H5T_STD_I16LE) <= 0 || !h5_has_fletcher32(a)) {
        koe_error_set(err, "%s: /audio is not a 1-d little-endian int16 dataset with checksums (damaged file?)",
                      s->path);
    } else {
        H5Sget_simple_extent_dims(sp, &len, NULL);
        s->samples = (int64_t)len;
        rc = 0;
    }
    H5Tclose(ft);
    H5Sclose(sp);
    return rc;
}

static int check_tables(CorpusShard *s, KoeError *err) {
    int64_t prev_end = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t o = s->offset[i], l = s->length[i];
        if (l <= 0 || o < prev_end || o > s->samples || l > s->samples - o)
            return koe_error_set(err, "%s: utterance %lld ('%s') has offset %lld, length %lld: outside /audio "
                                      "(%lld samples) or overlapping the one before; the shard is damaged, "
                                      "re-run koe prepare",
                                 s->path, (long long)i, s->id[i], (long long)o, (long long)l, (long long)s->samples);
        prev_end = o + l;
    }
    return 0;
}

static int open_align(CorpusShard *s, hid_t file, KoeError *err) {
    if (H5Lexists(file, "align", H5P_DEFAULT) <= 0) return 0;
    hid_t g = H5Gopen2(file, "align", H5P_DEFAULT);
    if (g < 0) return koe_error_set(err, "%s: cannot open /align: %s", s->path, h5_last_error());
    int rc = -1;
    int64_t n_frames = 0;
    hid_t d = -1;
    if (h5_read_strings(g, s->path, "phones", SHARD_NO_PHONE - 1, 0, &s->phones, &s->n_phones, err) < 0) goto out;
    if (s->n_phones == 0 || s->n_phones >= SHARD_NO_PHONE) {
        koe_error_set(err, "%s: /align/phones has %lld entries (1..%d expected)", s->path, (long long)s->n_phones,
                      SHARD_NO_PHONE - 1);
        goto out;
    }
    if (h5_read_array(g, s->path, "offset", H5T_NATIVE_INT64, sizeof(int64_t), s->n + 1, (void **)&s->align_offset, NULL, err) < 0) goto out;
    d = H5Dopen2(g, "frames", H5P_DEFAULT);
    if (d < 0) {
        koe_error_set(err, "%s: /align/frames is missing", s->path);
        goto out;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t len = 0;
    int ndims = H5Sget_simple_extent_ndims(sp);
    if (ndims == 1) H5Sget_simple_extent_dims(sp, &len, NULL);
    H5Sclose(sp);
    n_frames = (int64_t)len;
    if (ndims != 1) {
        koe_error_set(err, "%s: /align/frames is not 1-d", s->path);
        goto out;
    }
    if (s->align_offset[0] != 0 || s->align_offset[s->n] != n_frames) {
        koe_error_set(err, "%s: /align/offset does not span /align/frames (%lld frames)", s->path, (long long)n_frames);
        goto out;
    }
    for (int64_t i = 0; i < s->n; i++)
        if (s->align_offset[i + 1] < s->align_offset[i]) {
            koe_error_set(err, "%s: /align/offset decreases at utterance %lld", s->path, (long long)i);
            goto out;
        }
    rc = 0;
out:
    if (d >= 0) H5Dclose(d);
    H5Gclose(g);
    return rc;
}

static int shard_open_locked(CorpusShard *s, const char *path, KoeError *err) {
    int64_t rate, n_attr, samples_attr, n_len, version;
    hid_t file = h5_open_checksummed(path, "koe prepare", err);
    s->hid_file = file;
    s->hid_audio = -1;
    if (file < 0) return -1;
    if (h5_check_format(file, path, SHARD_FORMAT, SHARD_FORMAT_VERSION, err) < 0 ||
        h5_attr_read_i64(file, path, "format_version", &version, err) < 0)
        return -1;
    if (version < SHARD_FORMAT_VERSION) /* version 1: strings in the global heap, no audio checksums */
        return koe_error_set(err, "%s: a version %lld shard, written by an older koe without checksums; re-run "
                                  "koe prepare", path, (long long)version);
    if (h5_attr_read_i64(file, path, "sample_rate", &rate, err) < 0) return -1;
    if (rate != KOE_SAMPLE_RATE)
        return koe_error_set(err, "%s: sample_rate is %lld, koe shards are %d Hz", path, (long long)rate,
                             KOE_SAMPLE_RATE);
    if (h5_attr_read_i64(file, path, "n_utts", &n_attr, err) < 0 ||
        h5_attr_read_i64(file, path, "samples", &samples_attr, err) < 0)
        return -1;
    if (H5Lexists(file, "audio", H5P_DEFAULT) <= 0) return koe_error_set(err, "%s: /audio is missing", path);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, SHARD_CACHE_SLOTS, SHARD_CACHE_BYTES, 1.0);
    s->hid_audio = H5Dopen2(file, "audio", dapl);
    H5Pclose(dapl);
    if (s->hid_audio < 0) return koe_error_set(err, "%s: cannot open /audio: %s", path, h5_last_error());
    if (check_audio(s, err) < 0) return -1;
    if (s->samples != samples_attr)
        return koe_error_set(err, "%s: /audio has %lld samples, attribute 'samples' says %lld", path,
                             (long long)s->samples, (long long)samples_attr);
    if (H5Lexists(file, "utt", H5P_DEFAULT) <= 0) return koe_error_set(err, "%s: /utt is missing", path);
    hid_t g = H5Gopen2(file, "utt", H5P_DEFAULT);
    if (g < 0) return koe_error_set(err, "%s: cannot open /utt: %s", path, h5_last_error());
    int rc = -1;
    /* the dataspace is checked against n_utts before anything that size is allocated */
    if (h5_read_array(g, path, "offset", H5T_NATIVE_INT64, sizeof(int64_t), n_attr, (void **)&s->offset, &n_len, err) == 0) {
        s->n = n_len;
        if (h5_read_array(g, path, "length", H5T_NATIVE_INT64, sizeof(int64_t), s->n, (void **)&s->length, NULL, err) == 0 &&
            h5_read_array(g, path, "checksum", H5T_NATIVE_UINT64, sizeof(uint64_t), s->n, (void **)&s->checksum, NULL, err) == 0 &&
                 read_strings_n(g, path, "id", s->n, &s->id, err) == 0 &&
                 read_strings_n(g, path, "lang", s->n, &s->lang, err) == 0 &&
                 read_strings_n(g, path, "speaker", s->n, &s->speaker, err) == 0 &&
                 read_strings_n(g, path, "source", s->n, &s->source, err) == 0)
            rc = 0;
    }
    H5Gclose(g);
    if (rc < 0) return -1;
    if (check_ids(s, err) < 0 || check_tables(s, err) < 0) return -1;
    return open_align(s, file, err);
}

int corpus_shard_open(CorpusShard *s, const char *path, KoeError *err) {
    memset(s, 0, sizeof *s);
    s->path = koe_strdup(path);
    h5_lock();
    int rc = shard_open_locked(s, path, err);
    h5_unlock();
    if (rc < 0) corpus_shard_close(s);
    return rc;
}

/* Samples [start, start + count) of /audio into out (h5_lock held). */
static int read_samples(CorpusShard *s, int64_t start, int64_t count, int16_t *out) {
    hsize_t fstart[1] = {(hsize_t)start}, n[1] = {(hsize_t)count};
    hid_t fs = H5Dget_space((hid_t)s->hid_audio);
    hid_t ms = H5Screate_simple(1, n, NULL);
    int rc = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, fstart, NULL, n, NULL) >= 0 &&
                     H5Dread((hid_t)s->hid_audio, H5T_NATIVE_INT16, ms, fs, H5P_DEFAULT, out) >= 0
                 ? 0
                 : -1;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

int corpus_shard_read(CorpusShard *s, int64_t i, int64_t start, int64_t count, int16_t *out, KoeError *err) {
    if (i < 0 || i >= s->n)
        return koe_error_set(err, "%s: utterance %lld out of range (%lld utterances)", s->path, (long long)i,
                             (long long)s->n);
    if (start < 0 || count < 0 || start > s->length[i] || count > s->length[i] - start)
        return koe_error_set(err, "%s: utterance '%s': samples [%lld, %lld) outside its %lld samples", s->path,
                             s->id[i], (long long)start, (long long)(start + count), (long long)s->length[i]);
    if (count == 0) return 0;
    /* The whole utterance is read and checked against its checksum (its chunks are the ones a crop
     * decodes anyway, give or take the two at its ends); a crop is then copied out of it. */
    const int64_t len = s->length[i];
    int16_t *all = count == len ? out : koe_malloc((size_t)len * sizeof *all);
    int rc = 0;
    h5_lock();
    if (read_samples(s, s->offset[i], len, all) < 0)
        rc = koe_error_set(err, "%s: cannot read utterance '%s': %s (the shard is damaged: checksum or "
                                "decompression failed; re-run koe prepare for it)",
                           s->path, s->id[i], h5_last_error());
    h5_unlock();
    if (rc == 0 && shard_audio_checksum(all, len) != s->checksum[i])
        rc = koe_error_set(err, "%s: utterance '%s' does not match its checksum (the shard is damaged; re-run koe "
                                "prepare for it)", s->path, s->id[i]);
    if (all != out) {
        if (rc == 0) memcpy(out, all + start, (size_t)count * sizeof *out);
        free(all);
    }
    return rc;
}

int64_t corpus_shard_read_align(CorpusShard *s, int64_t i, uint16_t *out, int64_t cap, KoeError *err) {
    if (!s->align_offset) return koe_error_set(err, "%s: has no phone alignments", s->path);
    if (i < 0 || i >= s->n)
        return koe_error_set(err, "%s: utterance %lld out of range (%lld utterances)", s->path, (long long)i,
                             (long long)s->n);
    int64_t a = s->align_offset[i], count = s->align_offset[i + 1] - a;
    if (!out || count == 0) return count;
    if (count > cap)
        return koe_error_set(err, "%s: utterance '%s' has %lld alignment frames, buffer holds %lld", s->path, s->id[i],
                             (long long)count, (long long)cap);
    hsize_t fstart[1] = {(hsize_t)a}, n[1] = {(hsize_t)count};
    int rc = -1;
    h5_lock();
    hid_t d = H5Dopen2((hid_t)s->hid_file, "align/frames", H5P_DEFAULT);
    hid_t fs = d >= 0 ? H5Dget_space(d) : -1;
    hid_t ms = H5Screate_simple(1, n, NULL);
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, fstart, NULL, n, NULL) >= 0 &&
        H5Dread(d, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, out) >= 0)
        rc = 0;
    else
        koe_error_set(err, "%s: cannot read the alignment of '%s': %s", s->path, s->id[i], h5_last_error());
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    h5_unlock();
    if (rc < 0) return -1;
    for (int64_t f = 0; f < count; f++)
        if (out[f] >= s->n_phones && out[f] != SHARD_NO_PHONE)
            return koe_error_set(err, "%s: utterance '%s': alignment frame %lld has phone %u, the inventory has %lld",
                                 s->path, s->id[i], (long long)f, (unsigned)out[f], (long long)s->n_phones);
    return count;
}

int64_t corpus_shard_storage_bytes(CorpusShard *s) {
    h5_lock();
    hsize_t b = H5Dget_storage_size((hid_t)s->hid_audio);
    h5_unlock();
    return (int64_t)b;
}

void corpus_shard_close(CorpusShard *s) {
    h5_lock();
    if (s->hid_audio > 0) H5Dclose((hid_t)s->hid_audio);
    if (s->hid_file > 0) H5Fclose((hid_t)s->hid_file);
    h5_unlock();
    free(s->offset);
    free(s->length);
    free(s->checksum);
    h5_strings_free(s->id, s->id ? s->n : 0);
    h5_strings_free(s->lang, s->lang ? s->n : 0);
    h5_strings_free(s->speaker, s->speaker ? s->n : 0);
    h5_strings_free(s->source, s->source ? s->n : 0);
    h5_strings_free(s->phones, s->n_phones);
    free(s->align_offset);
    free(s->path);
    memset(s, 0, sizeof *s);
}
