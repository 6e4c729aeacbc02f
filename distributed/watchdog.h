/* watchdog.h — ends the job when a rank hangs (distributed/README.md, Watchdog): a per-rank thread that knows what
 * the rank is doing (its phase: "forward/backward step 123", "gradient allreduce step 123",
 * "checkpoint write step 123") and aborts the communicator with a message naming the rank and the
 * phase when the phase has not changed for run.watchdog_s seconds. A phase that waits on the other
 * ranks (a collective) gets 1.5 x the limit, so that a hung rank names itself before the ranks
 * waiting for it time out; those say that a peer is dead or hung. A rank that dies is Open MPI's to
 * notice: mpirun ends the job when a rank exits without MPI_Finalize.
 * Must not: do any MPI but comm_abort, or slow the step (a phase change is a lock and a snprintf). */
#pragma once

/* Start the thread (seconds <= 0: no watchdog; the phase calls are then no-ops). */
void watchdog_start(double seconds);
/* The rank is now doing this (printf format); waiting = 1: inside a collective, waiting on peers. */
void watchdog_phase(int waiting, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void watchdog_stop(void);
