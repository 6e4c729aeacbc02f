/* train.h — the pretraining loop behind `koe train` (recipes/README.md): recipe -> corpus -> loader ->
 * for each update, update_freq micro-batches of (mask, forward, loss, backward) -> gradient norm ->
 * skip non-finite updates -> clip -> AdamW at the schedule's lr -> log, validate, checkpoint.
 * Resumes from RUN/checkpoints/latest and continues bit for bit. The values summed over ranks
 * (the update's scored frames, loss sums, gradient) are kept explicit. */
#pragma once
#include <signal.h>

#include "recipe.h"

/* Run the recipe to optim.max_updates (or until *stop becomes non-zero: the step in flight
 * finishes, a checkpoint is written, and the run returns KOE_EXIT_PREEMPTED). Returns a koe exit
 * code; on failure the message has been printed. */
int train_run(const Recipe *rc, volatile sig_atomic_t *stop);

/* The stop signals (SIGINT, SIGTERM, SIGUSR1). `koe train` blocks them in its main thread before it
 * starts any thread of its own, so OpenMP workers, the loader and the watchdog inherit the block and
 * no signal lands in the middle of a GEMM (oneDNN's sgemm interrupted by a signal corrupted the heap:
 * kill -TERM crashed 5 runs of 8 before this); train_run lets them through at each update boundary. */
void train_stop_signals(sigset_t *set);
