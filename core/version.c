/* version.c — koe_version() from the header the Makefile generates. See version.h. */
#include "version.h"

#include "koe_version.h" /* BUILD/gen: #define KOE_VERSION "..." */

const char *koe_version(void) { return KOE_VERSION; }
