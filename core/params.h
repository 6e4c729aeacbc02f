/* params.h — the parameter table (core/README.md): an ordered list of {name, shape, init}
 * entries with Hugging Face transformers names. The table decides the layout of the one flat float
 * buffer that holds every parameter (and of the gradient buffer, which has the same layout), how each
 * tensor is initialised, and what checkpoints, export and parity tests read and write by name.
 * Must not: know about any layer's math, allocate per tensor, or include MPI/HDF5. */
#pragma once
#include <stdint.h>

#define PARAM_NAME_LEN 96
#define PARAM_MAX_DIMS 4

/* How a tensor is initialised (fairseq's choices, see model.c). Draws come from
 * koe_rng(seed, tensor index, 0, KOE_RNG_INIT), so a tensor's values do not depend on the others. */
typedef enum {
    PARAM_INIT_ZERO = 1,
    PARAM_INIT_ONE,
    PARAM_INIT_NORMAL,     /* N(0, a^2) */
    PARAM_INIT_UNIFORM,    /* U(a, b) */
    PARAM_INIT_NORM_OF,    /* weight norm's g: g[k] = ||tensor ref[:, :, k]|| (ref initialised first) */
    PARAM_INIT_UNIT_ROWS,  /* N(0, 1) draws, then each row (last dimension) divided by its l2 norm */
} ParamInit;

typedef struct {
    char name[PARAM_NAME_LEN];
    int ndim;
    int64_t shape[PARAM_MAX_DIMS];
    int64_t numel;
    int64_t offset; /* floats from the start of the flat buffer */
    ParamInit init;
    float a, b;     /* init arguments (std, or the uniform range) */
    int ref;        /* PARAM_INIT_NORM_OF: index of the tensor whose norm is taken */
    int frozen;     /* 1: never trained (BEST-RQ's random projection and codebooks): saved in checkpoints
                       like any tensor, but its gradient is zeroed and it is excluded from weight decay
                       (params_freeze_step), so AdamW leaves it bit-identical */
    int rearranged; /* 1: its layers read it only through a rearranged copy (a conv weight, unfolded as
                       (OC, K, Cg) for its GEMMs; the positional conv's weight norm), never as stored:
                       a bf16 run keeps no bf16 copy of it (params_bf16_ranges) */
} ParamEntry;

typedef struct {
    ParamEntry *e; /* (n) in buffer order */
    int n, cap;
    int64_t total; /* floats in the flat buffer */
} ParamTable;

void params_table_init(ParamTable *t);
void params_table_free(ParamTable *t);
/* Append a tensor at the end of the buffer; returns its index. Names must be unique. */
int params_add(ParamTable *t, const char *name, int ndim, const int64_t *shape, ParamInit init, float a, float b);
/* A weight norm's g (1, 1, K), initialised as the norm of tensor ref (OC, Ci, K) over (OC, Ci). */
int params_add_norm_of(ParamTable *t, const char *name, int ndim, const int64_t *shape, int ref);
/* Index of a name, or -1. */
int params_find(const ParamTable *t, const char *name);
/* Pointer to tensor `name` inside buf (a buffer laid out by t); fatal if the name is unknown
 * (a programming error: the model asks only for names it added). */
float *params_view(const ParamTable *t, float *buf, const char *name);
/* Fill buf (t->total floats) with the initial values, from the seed only. */
void params_init(const ParamTable *t, float *buf, uint64_t seed);
/* Mark tensor i rearranged (see ParamEntry.rearranged). */
void params_set_rearranged(ParamTable *t, int i);
/* The ranges [r[2j], r[2j+1]) of flat positions holding the tensors that are not rearranged, adjacent
 * ones merged, ascending, into r (room for 2 * t->n values): where a bf16 run keeps the parameters'
 * bf16 copy (core/gemm.h gemm_set_bf16_copy). Returns their number. */
int params_bf16_ranges(const ParamTable *t, int64_t *r);
/* Mark tensor i frozen (see ParamEntry.frozen). */
void params_set_frozen(ParamTable *t, int i);
/* What the trainer does before every optimizer step so that frozen tensors never change: zero their
 * gradients in grads (t->total floats; NULL: skip) and clear their positions in the AdamW decay mask
 * (t->total bytes; NULL: skip). With a zero gradient from the start, AdamW's moments stay 0 and its
 * update is exactly 0; with decay cleared, nothing else touches the tensor. */
void params_freeze_step(const ParamTable *t, float *grads, uint8_t *decay);
/* "(768, 48, 128)" */
void params_shape_str(const ParamEntry *e, char *buf, int n);
