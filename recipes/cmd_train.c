/* cmd_train.c — `koe train RECIPE.ini [section.key=value ...]`: parse the recipe, block the stop
 * signals and install their handler (it sets the stop flag, which the trainer agrees on over the
 * ranks; trainer.h says when the signals get through), and run the training loop: one update, then
 * validation, logging, the stop agreement and checkpoints when they are due. What each of those does
 * is in recipes/trainer.c. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "recipe.h"
#include "trainer.h"

static int train_command(const void *opts, int n_args, char **args);

static void train_help_keys(FILE *f) {
    fputs("\nRecipe keys:\n", f);
    recipe_print_keys(f);
}

static const CliFlag train_flags[] = {CLI_END};

const CliCommand cmd_train = {
    .name = "train",
    .summary = "pretrain a model (BEST-RQ, HuBERT or wav2vec 2.0) from a recipe",
    .args = "RECIPE.ini [section.key=value ...]",
    .min_args = 1,
    .max_args = -1,
    .about =
        "Trains the recipe's model on data.corpus until optim.max_updates, resuming from\n"
        "RUN/checkpoints/latest when present (RUN = run.dir); a resumed run continues bit for bit.\n"
        "Prints the resolved recipe and its hash, then progress: on a terminal a progress line with rate\n"
        "and ETA, otherwise one line every run.log_every updates. Writes:\n"
        "  RUN/recipe.ini                 the resolved recipe\n"
        "  RUN/log.jsonl                  one JSON object per logged update: step, loss, acc, lr, grad_norm,\n"
        "                                 audio_s_per_s, skipped, frames (+ code_ppl, prob_ppl, temp for\n"
        "                                 wav2vec 2.0; acc_u for HuBERT; valid_loss, valid_acc at\n"
        "                                 run.valid_every; elapsed_s, max_rss_mb, head_loss, diversity_loss,\n"
        "                                 feature_pen, code_usage,\n"
        "                                 target_ppl, clip, utts, epoch: recipes/README.md says what each is);\n"
        "                                 losses are in nats per scored frame (fairseq logs bits: divide by ln 2)\n"
        "  RUN/tb/train/, RUN/tb/valid/   the same scalars as TensorBoard event files, and the recipe as text:\n"
        "                                 tensorboard --logdir RUN/tb (--samples_per_plugin scalars=0 for long runs)\n"
        "  RUN/checkpoints/step-NNNNNNNN.h5, RUN/checkpoints/latest   every run.save_every and at the end;\n"
        "                                 the run.keep_last newest are kept\n"
        "HuBERT reads its targets from CORPUS/labels/<data.labels>/ (koe label).\n"
        "SIGINT, SIGTERM or SIGUSR1 (to any rank; mpirun forwards them), or a file RUN/STOP: the update in\n"
        "flight finishes, the ranks agree, a checkpoint is written, exit code 3 (requeue me; RUN/STOP is\n"
        "removed so that the next run continues). Under mpirun every rank writes its part of one checkpoint\n"
        "file (MPI-IO); a checkpoint resumes on any number of ranks.\n"
        "run.watchdog_s: a rank whose phase (forward/backward, gradient reduction, checkpoint write, ...)\n"
        "has not changed for that long ends the whole job with a message naming the rank and the phase;\n"
        "keep it above the time of a checkpoint write and of a validation pass.\n"
        "Health checks (run.health_*; 0 = off): a wav2vec 2.0 codebook or BEST-RQ targets that collapse, or a\n"
        "loss that has not fallen after run.health_plateau_updates, stop the run with exit code 2 and a message\n"
        "saying what was seen, which keys to change and where the newest checkpoint is.\n"
        "run.plot_every: RUN/plots redrawn at checkpoints (koe plot RUN draws them at any time).\n"
        "An update with a non-finite loss or gradient is skipped; after optim.max_skips in a row the run\n"
        "stops with exit code 2 and the last good checkpoint intact. An update whose batch has no masked\n"
        "frame is skipped too, without counting toward optim.max_skips.\n"
        "\n"
        "Every recipe key with its default and meaning follows.\n",
    .flags = train_flags,
    .run = train_command,
    .help_more = train_help_keys,
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* The run to optim.max_updates, or until a stop signal or RUN/STOP (the update in flight finishes, a
 * checkpoint is written, KOE_EXIT_PREEMPTED). Returns a koe exit code. */
static int train_loop(const Recipe *rc) {
    KoeError err;
    if (comm_rank() == 0) {
        printf("# resolved recipe (hash %016llx)\n%s", (unsigned long long)rc->hash, rc->text);
        fflush(stdout);
    }
    Trainer *tr = trainer_open(rc, &(TrainerOptions){.run_dir = 1}, &err);
    if (!tr) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    int code = KOE_EXIT_OK;
    while (trainer_steps_done(tr) < trainer_max_updates(tr)) {
        TrainerStep s;
        if (trainer_step(tr, &s, &err) < 0)
            trainer_fatal(tr, KOE_EXIT_USAGE, "step %lld: %s", (long long)s.step, err.msg);
        if (s.give_up) {
            code = KOE_EXIT_INTERNAL;
            break;
        }
        double vloss = NAN, vacc = NAN;
        const int valid = trainer_due_valid(tr);
        if (valid && trainer_validate(tr, &vloss, &vacc, &err) < 0)
            trainer_fatal(tr, KOE_EXIT_USAGE, "validation at step %lld: %s", (long long)trainer_steps_done(tr),
                          err.msg);
        if (trainer_due_log(tr)) trainer_log(tr, &s, valid, vloss, vacc);
        else
            trainer_progress(tr, &s);
        if (trainer_unhealthy(tr)) {
            code = KOE_EXIT_INTERNAL;
            break;
        }
        const int stopping = trainer_stop_agreed(tr, &stop_requested);
        if (trainer_due_save(tr) || stopping) trainer_save(tr);
        if (stopping) {
            trainer_stopped(tr);
            code = KOE_EXIT_PREEMPTED;
            break;
        }
    }
    if (code == KOE_EXIT_OK) trainer_done(tr);
    trainer_close(tr);
    return code;
}

static int train_command(const void *opts, int n_args, char **args) {
    (void)opts;
    Recipe rc;
    KoeError err;
    if (recipe_load(&rc, args[0], n_args - 1, args + 1, &err) < 0) {
        fprintf(stderr, "koe train: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    sigset_t stop_set;
    trainer_stop_signals(&stop_set);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    cli_catch_stop_signals(on_signal);
    int code = train_loop(&rc);
    recipe_free(&rc);
    return code;
}
