/* tfevents.c — see tfevents.h. Protobuf wire format by hand: a field is a varint key
 * (field << 3 | wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32) and its value; an
 * embedded message is length-delimited, so it is encoded into its own buffer first. */
#include "tfevents.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct TfEvents {
    int fd;
    off_t size; /* the bytes of the whole records written so far */
    char path[4200];
};

/* ---- CRC-32C ----------------------------------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1; /* Castagnoli, reflected */
        crc_table[i] = c;
    }
}

uint32_t tfevents_crc32c(const void *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *b = p;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ b[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

uint32_t tfevents_masked_crc(const void *p, size_t n) {
    const uint32_t c = tfevents_crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- protobuf encoding ------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} PbBuf;

static void pb_bytes(PbBuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = koe_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void pb_varint(PbBuf *b, uint64_t v) {
    uint8_t t[10];
    int n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_bytes(b, t, (size_t)n);
}

static void pb_key(PbBuf *b, int field, int wire) { pb_varint(b, (uint64_t)(field << 3 | wire)); }

static void pb_len(PbBuf *b, int field, const void *p, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_bytes(b, p, n);
}

/* An embedded message, then the inner buffer is emptied for reuse. */
static void pb_msg(PbBuf *b, int field, PbBuf *inner) {
    pb_len(b, field, inner->p, inner->n);
    inner->n = 0;
}

static void pb_fixed(PbBuf *b, int field, uint64_t bits, int bytes) { /* little-endian, as protobuf */
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(bits >> (8 * i));
    pb_key(b, field, bytes == 8 ? 1 : 5);
    pb_bytes(b, t, (size_t)bytes);
}

static void pb_double(PbBuf *b, int field, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    pb_fixed(b, field, bits, 8);
}

static void pb_float(PbBuf *b, int field, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    pb_fixed(b, field, bits, 4);
}

static void pb_free(PbBuf *b) { free(b->p); }

/* Event fields 1 (wall_time) and 2 (step), which every event starts with. */
static void event_head(PbBuf *ev, double wall_time, int64_t step) {
    pb_double(ev, 1, wall_time);
    if (step) {
        pb_key(ev, 2, 0);
        pb_varint(ev, (uint64_t)step);
    }
}

/* ---- records ----------------------------------------------------------------------------------- */

/* One record (length, its masked CRC, the event, its masked CRC) in one write(). */
static int write_record(TfEvents *w, const PbBuf *ev, KoeError *err) {
    PbBuf r = {0};
    uint8_t head[12];
    const uint64_t n = ev->n;
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)(n >> (8 * i));
    const uint32_t hc = tfevents_masked_crc(head, 8), ec = tfevents_masked_crc(ev->p, ev->n);
    for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(hc >> (8 * i));
    pb_bytes(&r, head, 12);
    pb_bytes(&r, ev->p, ev->n);
    for (int i = 0; i < 4; i++) head[i] = (uint8_t)(ec >> (8 * i));
    pb_bytes(&r, head, 4);
    size_t done = 0;
    while (done < r.n) {
        const ssize_t k = write(w->fd, r.p + done, r.n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = ENOSPC;
            pb_free(&r);
            koe_error_set(err, "%s: write failed: %s", w->path, strerror(errno));
            koe_error_fs(err, w->path);
            /* the part of the record that was written goes: the file ends on a whole record */
            if (ftruncate(w->fd, w->size) < 0)
                koe_error_set(err, "%s: write failed, and cutting its half record failed: %s", w->path, strerror(errno));
            return -1;
        }
        done += (size_t)k;
    }
    w->size += (off_t)r.n;
    pb_free(&r);
    return 0;
}

/* The <time> of a new file's name: the wall time's seconds, or past every file already in dir, so that
 * name order (TensorBoard's reading order) is creation order even for a restart within the second. */
static long long name_time(const char *dir, double wall_time) {
    static const char prefix[] = "events.out.tfevents.";
    long long t = (long long)wall_time;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, sizeof prefix - 1)) {
            const long long u = strtoll(e->d_name + sizeof prefix - 1, NULL, 10);
            if (u >= t) t = u + 1;
        }
    if (d) closedir(d);
    return t;
}

TfEvents *tfevents_open(const char *dir, double wall_time, KoeError *err) {
    TfEvents *w = koe_calloc(1, sizeof *w);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    const long long t = name_time(dir, wall_time);
    w->fd = -1;
    for (int n = 0; w->fd < 0 && n < 1000; n++) {
        snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%010lld.%s.%d.%d", dir, t, host, (int)getpid(), n);
        w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (w->fd < 0 && errno != EEXIST) break;
    }
    if (w->fd < 0) {
        koe_error_set(err, "%s: cannot create a TensorBoard event file: %s", w->path, strerror(errno));
        koe_error_fs(err, w->path);
        free(w);
        return NULL;
    }
    PbBuf ev = {0};
    event_head(&ev, wall_time, 0);
    pb_len(&ev, 3, "brain.Event:2", 13);
    const int rc = write_record(w, &ev, err);
    pb_free(&ev);
    if (rc < 0) { /* not even its first record: no file */
        unlink(w->path);
        tfevents_close(w);
        return NULL;
    }
    return w;
}

int tfevents_scalars(TfEvents *w, double wall_time, int64_t step, const TfScalar *v, int n, KoeError *err) {
    PbBuf ev = {0}, sum = {0}, val = {0};
    for (int i = 0; i < n; i++) {
        pb_len(&val, 1, v[i].tag, strlen(v[i].tag));
        pb_float(&val, 2, v[i].value);
        pb_msg(&sum, 1, &val);
    }
    event_head(&ev, wall_time, step);
    pb_msg(&ev, 5, &sum);
    const int rc = write_record(w, &ev, err);
    pb_free(&ev);
    pb_free(&sum);
    pb_free(&val);
    return rc;
}

int tfevents_text(TfEvents *w, double wall_time, int64_t step, const char *tag, const char *markdown, KoeError *err) {
    PbBuf ev = {0}, sum = {0}, val = {0}, a = {0}, b = {0};
    pb_len(&val, 1, tag, strlen(tag)); /* Value.tag */
    pb_key(&a, 1, 0);                  /* TensorProto.dtype = DT_STRING; no tensor_shape: a scalar, */
    pb_varint(&a, 7);                  /* which the text plugin renders as markdown (not as a table) */
    pb_len(&a, 8, markdown, strlen(markdown)); /* TensorProto.string_val */
    pb_msg(&val, 8, &a);                       /* Value.tensor */
    pb_len(&b, 1, "text", 4);                  /* PluginData.plugin_name */
    pb_msg(&a, 1, &b);                         /* SummaryMetadata.plugin_data */
    pb_msg(&val, 9, &a);                       /* Value.metadata */
    pb_msg(&sum, 1, &val);
    event_head(&ev, wall_time, step);
    pb_msg(&ev, 5, &sum);
    const int rc = write_record(w, &ev, err);
    PbBuf *all[] = {&ev, &sum, &val, &a, &b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pb_free(all[i]);
    return rc;
}

int tfevents_session_start(TfEvents *w, double wall_time, int64_t step, KoeError *err) {
    PbBuf ev = {0}, log = {0};
    pb_key(&log, 1, 0); /* SessionLog.status = START */
    pb_varint(&log, 1);
    event_head(&ev, wall_time, step);
    pb_msg(&ev, 7, &log);
    const int rc = write_record(w, &ev, err);
    pb_free(&ev);
    pb_free(&log);
    return rc;
}

const char *tfevents_path(const TfEvents *w) { return w->path; }

void tfevents_close(TfEvents *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    free(w);
}
