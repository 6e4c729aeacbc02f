/* rundir.c — see rundir.h. Must not: delete the checkpoint latest names, or count a .tmp as a
 * checkpoint. */
#include "rundir.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"

void rundir_step_path(char *out, size_t n, const char *dir, int64_t step) {
    snprintf(out, n, "%s/step-%08lld.h5", dir, (long long)step);
}

/* Steps of the published step files in dir (not .tmp), newest first; returns the count. */
static int64_t list_steps(const char *dir, int64_t **steps) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char tail[8];
        if (sscanf(e->d_name, "step-%lld.h%7s", &s, tail) != 2 || strcmp(tail, "5") || s < 0) continue;
        char canon[64];
        snprintf(canon, sizeof canon, "step-%08lld.h5", s);
        if (strcmp(canon, e->d_name)) continue;
        if (n == cap) *steps = koe_realloc(*steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof **steps);
        (*steps)[n++] = s;
    }
    closedir(d);
    for (int64_t i = 1; i < n; i++) /* insertion sort, descending: a run keeps a handful */
        for (int64_t j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t x = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = x;
        }
    return n;
}

int rundir_publish_latest(const char *dir, int64_t step, int keep_last, KoeError *err) {
    size_t n = strlen(dir) + 32;
    char *tmp = koe_malloc(n), *latest = koe_malloc(n);
    snprintf(tmp, n, "%s/latest.tmp", dir);
    snprintf(latest, n, "%s/latest", dir);
    FILE *fp = fopen(tmp, "w");
    int rc = -1;
    if (!fp) {
        koe_error_set(err, "%s: cannot create: %m", tmp);
        koe_error_fs(err, tmp);
    } else {
        int wr = fprintf(fp, "step-%08lld.h5\n", (long long)step);
        if (fclose(fp) != 0 || wr < 0) {
            koe_error_set(err, "%s: cannot write: %m", tmp);
            koe_error_fs(err, tmp);
            remove(tmp);
        } else
            rc = koe_publish_file(tmp, latest, err);
    }
    free(tmp);
    free(latest);
    if (rc < 0) return -1;
    int64_t *steps;
    int64_t ns = list_steps(dir, &steps);
    for (int64_t i = keep_last; i < ns; i++) {
        if (steps[i] == step) continue;
        char p[4200];
        rundir_step_path(p, sizeof p, dir, steps[i]);
        if (remove(p) < 0) koe_warn("cannot remove old checkpoint %s: %m", p);
    }
    free(steps);
    return 0;
}

int64_t rundir_candidates(const char *dir, int64_t **steps) {
    char latest[4200], name[256] = "";
    snprintf(latest, sizeof latest, "%s/latest", dir);
    int64_t first = -1;
    FILE *fp = fopen(latest, "r");
    if (fp) {
        long long s = -1;
        if (fgets(name, sizeof name, fp)) name[strcspn(name, "\r\n")] = 0;
        fclose(fp);
        if (sscanf(name, "step-%lld.h5", &s) == 1 && s >= 0) first = s;
        else
            koe_warn("%s does not name a step-NNNNNNNN.h5 file ('%s'); looking for the newest usable checkpoint",
                     latest, name);
    }
    int64_t *all;
    int64_t n = list_steps(dir, &all), k = 0;
    *steps = koe_malloc((size_t)(n + 1) * sizeof **steps);
    if (first >= 0) (*steps)[k++] = first;
    for (int64_t i = 0; i < n; i++)
        if (all[i] != first) (*steps)[k++] = all[i];
    free(all);
    return k;
}

int rundir_follow_latest(const char *path, char *out, size_t n, KoeError *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    char text[64];
    const size_t got = fread(text, 1, sizeof text - 1, fp); /* 0 for a directory */
    fclose(fp);
    text[got] = 0;
    long long s;
    char name[64];
    if (sscanf(text, "step-%lld.h5", &s) != 1 || s < 0) return 0;
    snprintf(name, sizeof name, "step-%08lld.h5\n", s);
    if (strcmp(text, name)) return 0; /* exactly what rundir_publish_latest writes */
    name[strlen(name) - 1] = 0;
    const char *slash = strrchr(path, '/');
    const int dir_len = slash ? (int)(slash - path) + 1 : 0; /* with its '/' */
    if (snprintf(out, n, "%.*s%s", dir_len, path, name) >= (int)n)
        return koe_error_set(err, "it names %s, and the path to it is too long", name);
    if (access(out, F_OK) != 0)
        return koe_error_set(err, "it is a run's pointer to its newest checkpoint, %s, which is not there (%m); "
                                  "pass one of the run's step-NNNNNNNN.h5 files",
                             out);
    return 1;
}
