/* version.h — which koe this is: `git describe --tags --always --dirty` of the source tree at build
 * time, or the VERSION file of a release tarball (no .git). The Makefile writes it into
 * BUILD/gen/koe_version.h and rebuilds core/version.o when it changes (a commit, a tag, an edit).
 * Meant for `koe --version`, checkpoints and logs. Must not: depend on anything but the build. */
#pragma once

const char *koe_version(void); /* e.g. "0.3.0-12-gabc1234" or "0.3.0" */
