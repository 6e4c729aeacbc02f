/* trainer.h — the one training path: `koe train` runs it over the recipe's corpus, `koe bench` times
 * the same trainer_step on a synthetic (or the recipe's real) batch.
 *
 * trainer_open builds everything a run needs from the recipe: the corpus sides (training, and
 * validation when data.valid_corpus is set) with HuBERT's label sets, the model with the
 * objective's head in the same flat buffer, the objective, the loader, AdamW and the schedule, the
 * data-parallel gradient reduction on several ranks (ZeRO-1 with run.zero), and — when it owns a
 * run directory — the resume state from RUN/checkpoints/latest. trainer_step runs one update:
 * optim.update_freq micro-batches of (mask, forward, loss, backward), the gradient reduction over
 * ranks, one normalisation by the update's scored frames over all ranks, the global-norm clip,
 * AdamW at the schedule's lr; an update with a non-finite loss or gradient, or with no scored frame,
 * is skipped. Logging, validation, checkpointing and the stop agreement are functions of their own,
 * so `koe train`'s loop (recipes/cmd_train.c) reads as the list of what an update does.
 *
 * Must not: keep any randomness outside core/rng.h streams keyed by (seed, step, utterance), write a
 * checkpoint anywhere but through distributed/ckpt.h, or write anything on disk when it does not own
 * a run directory (koe bench). */
#pragma once
#include <signal.h>
#include <stdint.h>

#include "../core/model.h"
#include "recipe.h"

/* A batch made up in memory (koe bench): the same B utterances of S samples of N(0, 1) noise every
 * update (the fbank frontend gets N(0, 1) frames of the same duration), and uniform HuBERT targets
 * over `classes` classes — the anchor torch_hubert_step.py's batch. */
typedef struct {
    int B;
    int64_t S;
    int classes;
} TrainerSynthetic;

typedef struct {
    const TrainerSynthetic *synthetic; /* NULL: the recipe's data.corpus through the loader */
    int run_dir; /* 1: resume from and write to run.dir (koe train); 0: nothing on disk (koe bench) */
    int any_precision; /* 1: steps may also run in fp32 in a bf16 run (koe bench --interleave): the model's
                          arena is carved for fp32 activations (core/model.h arena_bf16), and an fp32
                          step's update leaves the weights' bf16 copy to the next bf16 step */
} TrainerOptions;

/* What one update did. Sums over all ranks. */
typedef struct {
    int64_t step;    /* the update's index (the step counter before it ran) */
    double loss;     /* loss per scored frame; NAN when no frame was scored */
    double acc;      /* masked accuracy */
    double gnorm;    /* gradient norm before clipping */
    int64_t frames;  /* scored frames */
    double samples;  /* audio samples of the update's global batches */
    double seconds;  /* wall time of the update */
    int applied;     /* 1: AdamW ran; 0: skipped (non-finite, or nothing scored) */
    int give_up;     /* optim.max_skips non-finite updates in a row: the run must stop (exit 2) */
} TrainerStep;

typedef struct Trainer Trainer;

/* Builds the run (see above). Errors a user can cause return NULL with err naming the key, the file
 * or the corpus; under MPI every rank fails the same way or the job is aborted. */
Trainer *trainer_open(const Recipe *rc, const TrainerOptions *opt, KoeError *err);
/* One update. Returns 0, or -1 with err set (a batch could not be read; the caller aborts). */
int trainer_step(Trainer *tr, TrainerStep *s, KoeError *err);
/* Loss and accuracy over the whole validation corpus (every utterance once, no dropout, fixed masks). */
int trainer_validate(Trainer *tr, double *loss, double *acc, KoeError *err);
/* Rank 0: one line of RUN/log.jsonl for the interval that ends with update s (non-finite values are
 * written as null), and the progress line or batch-log line. valid: validation ran at this step. */
void trainer_log(Trainer *tr, const TrainerStep *s, int valid, double vloss, double vacc);
/* A run.health_* check failed at the last trainer_log (the message is out): every rank returns 1 and the
 * run must stop with exit code 2. */
int trainer_unhealthy(const Trainer *tr);
/* Counts update s on the progress line (core/progress.h; on a terminal it shows s's loss, accuracy and
 * gradient norm); trainer_log does it itself, so call it at the steps without a log line. */
void trainer_progress(Trainer *tr, const TrainerStep *s);
/* The collective checkpoint of the current state (every rank writes its slices of one file). */
void trainer_save(Trainer *tr);
/* Any rank saw a stop signal or RUN/STOP: every rank returns 1 (collective). */
int trainer_stop_agreed(Trainer *tr, volatile sig_atomic_t *stop);
/* After a stop: removes RUN/STOP (so that the next run continues) and says how to resume. */
void trainer_stopped(Trainer *tr);
/* After the last update: says where the final checkpoint is. */
void trainer_done(Trainer *tr);
void trainer_close(Trainer *tr);
/* A failed step or validation ends the process: closes tr first (its loader's threads read HDF5, and
 * exit() tears HDF5 down under them), then koe_fatal(code, ...). */
void trainer_fatal(Trainer *tr, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

int64_t trainer_steps_done(const Trainer *tr);
int64_t trainer_max_updates(const Trainer *tr);
int trainer_due_valid(const Trainer *tr);
int trainer_due_log(const Trainer *tr);
int trainer_due_save(const Trainer *tr);
Model *trainer_model(Trainer *tr);

/* The stop signals (SIGINT, SIGTERM, SIGUSR1). `koe train` blocks them in its main thread before it
 * starts any thread of its own, so OpenMP workers, the loader and the watchdog inherit the block and
 * no signal lands in the middle of a GEMM (oneDNN's sgemm interrupted by a signal corrupted the heap:
 * kill -TERM crashed 5 runs of 8 before this); trainer_stop_agreed lets them through once per
 * update. */
void trainer_stop_signals(sigset_t *set);
