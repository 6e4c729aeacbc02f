/* label_join.h — the join behind `koe analyze labels`: a label set's frames matched to the corpus's
 * phone alignments, counted into analysis/pnmi.h's joint counts.
 *   - Phones are matched across shards by name: each shard's phone ids map into one inventory that
 *     every rank builds the same way from the shards' phone lists.
 *   - Alignments have 10 ms frames (LABEL_JOIN_ALIGN_RATE, 100 Hz); labels at another rate are
 *     repeated: alignment frame j takes label floor(j * label_rate / 100). Frames without a phone,
 *     or past the last label, are skipped.
 * Must not: do I/O or call MPI (recipes/cmd_analyze.c reads the files and sums the counts over ranks). */
#pragma once
#include <stdint.h>

#include "pnmi.h"

#define LABEL_JOIN_ALIGN_RATE 100.0

/* The global phone inventory: names[0 .. n - 1]. */
typedef struct {
    char **names;
    int n;
} PhoneInventory;

/* Index of name in the inventory, adding it when new. */
int phone_inventory_index(PhoneInventory *inv, const char *name);
void phone_inventory_free(PhoneInventory *inv);

/* Count one utterance: align (na) its alignment frames, as the shard's phone ids (no_phone: a frame
 * without a phone); phone_map maps those ids to inventory indices (the phones of pc); labels (nl) its
 * label frames at label_rate Hz. Returns the alignment frames skipped. */
int64_t label_join_count(PnmiCounts *pc, const uint16_t *align, int64_t na, uint16_t no_phone, const int *phone_map,
                         const int32_t *labels, int64_t nl, double label_rate);
