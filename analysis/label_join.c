/* label_join.c — see label_join.h. */
#include "label_join.h"

#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

int phone_inventory_index(PhoneInventory *inv, const char *name) {
    for (int i = 0; i < inv->n; i++)
        if (!strcmp(inv->names[i], name)) return i;
    inv->names = koe_realloc(inv->names, (size_t)(inv->n + 1) * sizeof(char *));
    inv->names[inv->n] = koe_strdup(name);
    return inv->n++;
}

void phone_inventory_free(PhoneInventory *inv) {
    for (int i = 0; i < inv->n; i++) free(inv->names[i]);
    free(inv->names);
    inv->names = NULL;
    inv->n = 0;
}

int64_t label_join_count(PnmiCounts *pc, const uint16_t *align, int64_t na, uint16_t no_phone, const int *phone_map,
                         const int32_t *labels, int64_t nl, double label_rate) {
    int64_t skipped = 0;
    for (int64_t j = 0; j < na; j++) {
        const int64_t li = (int64_t)((double)j * label_rate / LABEL_JOIN_ALIGN_RATE);
        if (align[j] == no_phone || li >= nl) {
            skipped++;
            continue;
        }
        const uint16_t phone = (uint16_t)phone_map[align[j]];
        pnmi_add(pc, &phone, &labels[li], 1);
    }
    return skipped;
}
