/* watchdog.c — see watchdog.h. */
#include "watchdog.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "../core/common.h"
#include "comm.h"

static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;
static pthread_t wd_thread;
static int wd_on, wd_quit, wd_waiting;
static double wd_limit, wd_since;
static char wd_phase[256] = "start-up";

static void *wd_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&wd_mu);
    while (!wd_quit) {
        const double limit = wd_waiting ? 1.5 * wd_limit : wd_limit, held = koe_now() - wd_since;
        if (held > limit) {
            fprintf(stderr,
                    "koe: watchdog: rank %d of %d has been in \"%s\" for %.0f s (run.watchdog_s = %g)%s; aborting "
                    "the job\n",
                    comm_rank(), comm_size(), wd_phase, held, wd_limit,
                    wd_waiting ? ": another rank is dead or hung (see its message, if any)" : "");
            fflush(stderr);
            comm_abort(KOE_EXIT_INTERNAL);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&wd_cv, &wd_mu, &ts);
    }
    pthread_mutex_unlock(&wd_mu);
    return NULL;
}

void watchdog_start(double seconds) {
    if (seconds <= 0 || wd_on) return;
    wd_limit = seconds;
    wd_since = koe_now();
    wd_quit = 0;
    if (pthread_create(&wd_thread, NULL, wd_main, NULL) != 0)
        koe_fatal(KOE_EXIT_INTERNAL, "watchdog: cannot start its thread");
    wd_on = 1;
}

void watchdog_phase(int waiting, const char *fmt, ...) {
    if (!wd_on) return;
    pthread_mutex_lock(&wd_mu);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd_phase, sizeof wd_phase, fmt, ap);
    va_end(ap);
    wd_waiting = waiting;
    wd_since = koe_now();
    pthread_mutex_unlock(&wd_mu);
}

void watchdog_stop(void) {
    if (!wd_on) return;
    pthread_mutex_lock(&wd_mu);
    wd_quit = 1;
    pthread_cond_signal(&wd_cv);
    pthread_mutex_unlock(&wd_mu);
    pthread_join(wd_thread, NULL);
    wd_on = 0;
}
