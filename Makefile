# koe — build, install, test, demo, bench.
#   make            build/koe, build/libkoe.a, build/hdf5-plugins/libh5zstd.so
#   make deps       install the Debian packages koe needs (a no-op when all are there)
#   make test       the whole suite (installs what is missing first); SAN=1 under ASan+UBSan
#   make fuzz       libFuzzer harnesses of every parser of outside data (tests/fuzz/README.md), each
#                   for FUZZ_SECONDS (default 60) from its seeds; FUZZ=name,name picks harnesses
#   make demo       synthesise a demo corpus and run the main job on it
#   make curves     train the tiny recipes on the demo corpus: reference curves in recipes/tiny/curves
#   make bench      benchmarks against ../shared/anchors (ratios, not timed tests)
#   make readme-analysis  README.md's `koe analyze layers` example from a real run (~15 min)
#   make install    PREFIX=/usr/local DESTDIR=  (koe, plugin, recipes, launch templates, man pages,
#                   bash completion, Lmod modulefile; launch/README.md, Installing)
#   make dist       build/koe-VERSION.tar.gz, the release tarball (Spack and EasyBuild build from it)
# Portable builds (a login node building for older compute nodes): CC=..., MARCH=-march=x86-64-v2
# (default -march=native), WERROR=0 (warnings not errors), MPI_PC= / HDF5_PC= (pkg-config names of
# another MPI's C library and its parallel HDF5, default Debian's ompi-c and hdf5-openmpi).
SHELL := /bin/bash
comma := ,
PREFIX ?= /usr/local
DESTDIR ?=
SAN ?= 0
MARCH ?= -march=native
PYTHON ?= /usr/bin/python3
ANCHORS ?= $(abspath ../shared/anchors)

# pkg-config names, and the Debian packages that provide them (plus test-only packages).
MPI_PC ?= ompi-c
HDF5_PC ?= hdf5-openmpi
PKGS := $(MPI_PC) $(HDF5_PC) openblas sndfile libzstd soxr kissfft-float inih espeak-ng jansson
TEST_PKGS := cmocka
DEB_RUNTIME := pkg-config openmpi-bin libopenmpi-dev libopenblas-openmp-dev libhdf5-openmpi-dev \
  libsndfile1-dev libzstd-dev libsoxr-dev libkissfft-dev libinih-dev libespeak-ng-dev espeak-ng-data \
  libdnnl-dev libjansson-dev help2man gnuplot-nox
DEB_TEST := libcmocka-dev python3-torch python3-torchaudio python3-h5py python3-soundfile \
  python3-sklearn python3-numpy hdf5-tools espeak-ng munge slurm-wlm slurm-client lmod bash-completion man-db \
  python3-protobuf protobuf-compiler python3-crcmod iproute2 clang libclang-rt-14-dev libomp-dev strace
DEB_ALL := $(DEB_RUNTIME) $(DEB_TEST)

ifeq ($(FUZZ_BUILD),1)
# The libFuzzer harnesses' build (tests/fuzz): Debian's clang, ASan+UBSan, coverage for libFuzzer.
BUILD ?= build-fuzz
CC := clang
WERROR := 0
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
  -Wno-pass-failed -Wno-unknown-attributes
LDSAN := -fsanitize=address,undefined
else ifeq ($(SAN),1)
BUILD ?= build-san
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN := -fsanitize=address,undefined
else
BUILD ?= build
OPT := -O2 -g $(MARCH)
LDSAN :=
endif

# make's built-in default CC is cc: ours is gcc unless CC is given (command line or environment)
ifeq ($(origin CC),default)
CC := gcc
endif
WERROR ?= 1
# GEMMs: oneDNN's sgemm (libdnnl-dev; it ships no pkg-config file, hence -ldnnl; core/gemm.h says
# why not OpenBLAS). OpenBLAS stays as the reference `koe bench` measures against, its OpenMP build
# (Debian's openblas-openmp variant) linked by path with an rpath, so that it shares our OpenMP pool.
MULTIARCH := $(shell $(CC) -print-multiarch)
OPENBLAS_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
export PKG_CONFIG_PATH := $(OPENBLAS_DIR)/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
# `make V=1` shows the full commands.
Q := $(if $(filter 1,$(V)),,@)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# -fno-math-errno: nothing in koe reads errno after a libm call; without it every sqrtf is a call
# that may set errno, and loops with one (AdamW's pass, core/optim.c) do not vectorise. Results keep
# their bits (sqrt is correctly rounded either way).
CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -fno-math-errno -fopenmp -pthread -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -MMD -MP -I$(BUILD)/gen
LDLIBS = $(PKG_LIBS) -ldnnl -Wl,-rpath,$(OPENBLAS_DIR) -lm -fopenmp -pthread $(LDSAN)

SRC := $(wildcard core/*.c data/*.c distributed/*.c analysis/*.c)
CMD_SRC := $(wildcard recipes/*.c)
LIB_OBJ := $(SRC:%.c=$(BUILD)/obj/%.o)
CMD_OBJ := $(CMD_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
PLUGIN := $(BUILD)/hdf5-plugins/libh5zstd.so

.PHONY: all deps check-deps test demo curves bench readme-analysis install dist clean help fuzz fuzz-build fuzz-bins FORCE
all: $(BUILD)/koe $(BUILD)/libkoe.a $(PLUGIN) $(TEST_BIN) $(BENCH_BIN)

help:
	@sed -n '1,9p' Makefile

# ---- dependencies -------------------------------------------------------------------------------
deps:
	@missing=$$(for p in $(DEB_ALL); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	echo "deps: installing" $$missing; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing

$(BUILD)/deps.ok: Makefile
	@mkdir -p $(BUILD); ok=1; echo "koe: dependencies (pkg-config)"; \
	for p in $(PKGS); do \
	  if pkg-config --exists $$p; then printf '  ✓ %-14s %s\n' $$p "$$(pkg-config --modversion $$p)"; \
	  else printf '  ✗ %-14s missing\n' $$p; ok=0; fi; done; \
	if printf '#include <oneapi/dnnl/dnnl.h>\n' | $(CC) $(CPPFLAGS) -E -x c - > /dev/null 2>&1; then \
	  printf '  ✓ %-14s %s\n' dnnl "(libdnnl-dev, no .pc)"; \
	else printf '  ✗ %-14s missing\n' dnnl; ok=0; fi; \
	if [ $$ok = 0 ]; then echo "koe: missing dependencies: run 'make deps' (Debian: apt-get install $(DEB_ALL))"; exit 1; fi; \
	touch $@

# ---- build --------------------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c $(BUILD)/deps.ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC    $<")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# The version (core/version.h): `git describe` of this tree when a tag is reachable; without a tag the
# VERSION file's number and the commit (0.1.0-gabc1234[-dirty]); in a release tarball (no .git) the
# VERSION file alone. Worked out on every make and written only when it changed, so that
# core/version.o is rebuilt exactly when HEAD, a tag or the dirty state changes.
VERSION_H := $(BUILD)/gen/koe_version.h
$(VERSION_H): FORCE
	@mkdir -p $(dir $@)
	@v=$$(cat VERSION); if [ -e .git ]; then v=$$(git describe --tags --dirty 2>/dev/null || \
	  { h=$$(git describe --always --dirty 2>/dev/null) && echo "$$v-g$$h"; } || echo "$$v"); fi; \
	printf '#define KOE_VERSION "%s"\n' "$$v" > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(BUILD)/obj/core/version.o: $(VERSION_H)

$(BUILD)/libkoe.a: $(LIB_OBJ)
	@rm -f $@
	@$(if $(Q),echo "  AR    $@")
	$(Q)ar rcs $@ $^

$(BUILD)/koe: $(CMD_OBJ) $(BUILD)/libkoe.a
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(CMD_OBJ) $(BUILD)/libkoe.a $(LDLIBS) -o $@

# The zstd filter as an HDF5 plugin: the same source, no libhdf5 symbols needed.
$(PLUGIN): data/zstd_filter.c data/zstd_filter.h $(BUILD)/deps.ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  SO    $@")
	$(Q)$(CC) -std=c11 -O2 -g -fPIC -shared -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -DKOE_H5_PLUGIN \
	  $(shell pkg-config --cflags $(HDF5_PC) libzstd) data/zstd_filter.c \
	  $(shell pkg-config --libs libzstd) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libkoe.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) $(shell pkg-config --cflags $(TEST_PKGS)) $< $(BUILD)/libkoe.a $(LDLIBS) \
	  $(shell pkg-config --libs $(TEST_PKGS)) -o $@

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libkoe.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) $< $(BUILD)/libkoe.a $(LDLIBS) -o $@

# libFuzzer harnesses: tests/fuzz/NAME.c linked with every object but main's (recipes/ holds the
# recipe parser). Built only in the FUZZ_BUILD=1 tree (make fuzz-build), never by `all`.
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_util.h $(BUILD)/libkoe.a $(filter-out %/main.o,$(CMD_OBJ))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ  $@")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer $< $(filter-out %/main.o,$(CMD_OBJ)) $(BUILD)/libkoe.a \
	  $(LDLIBS) -o $@

-include $(shell find $(BUILD)/obj $(BUILD)/tests $(BUILD)/bench $(BUILD)/fuzz -name '*.d' 2>/dev/null)

# ---- test, demo, bench --------------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory fuzz-build
	@BUILD=$(BUILD) PYTHON=$(PYTHON) SAN=$(SAN) ANCHORS=$(ANCHORS) bash tests/run.sh $(TESTS)

fuzz-build: deps
	@$(MAKE) --no-print-directory FUZZ_BUILD=1 fuzz-bins
fuzz-bins: $(FUZZ_BIN) $(PLUGIN)

# Each harness for FUZZ_SECONDS on its seeds (tests/fuzz/run.sh); new crashes land in build-fuzz/crashes.
FUZZ_SECONDS ?= 60
fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh $(subst $(comma), ,$(FUZZ))

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash recipes/demo.sh

curves: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) bash recipes/curves.sh

# README.md's `koe analyze layers` example (table and charts) from a real run on the demo corpus
readme-analysis: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) bash recipes/analysis/readme_example.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) ANCHORS=$(ANCHORS) bash tests/bench.sh $(BENCH)

# Man pages and bash completion are generated from the built koe's own help (launch/install/);
# the modulefile finds the prefix from where it lies, so a DESTDIR tree works as installed.
SHARE := $(DESTDIR)$(PREFIX)/share
install: $(BUILD)/koe $(PLUGIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/koe/hdf5-plugins $(SHARE)/koe/launch \
	  $(SHARE)/man/man1 $(SHARE)/bash-completion/completions $(SHARE)/modulefiles/koe $(SHARE)/doc/koe
	install -m 755 $(BUILD)/koe $(DESTDIR)$(PREFIX)/bin/koe
	install -m 755 launch/koe-local $(DESTDIR)$(PREFIX)/bin/koe-local
	install -m 755 $(PLUGIN) $(DESTDIR)$(PREFIX)/lib/koe/hdf5-plugins/
	cp -r data/wordlists $(SHARE)/koe/
	install -m 755 data/pickle_to_hf.py $(SHARE)/koe/
	for f in $(wildcard recipes/*/*.ini recipes/*/*.sh); do install -D -m 644 $$f $(SHARE)/koe/$$f; done
	cp -r launch/slurm launch/README.md $(SHARE)/koe/launch/
	bash launch/install/man.sh $(BUILD)/koe $(SHARE)/man/man1
	bash launch/install/completion.sh $(BUILD)/koe > $(SHARE)/bash-completion/completions/koe
	install -m 644 launch/install/koe.lua $(SHARE)/modulefiles/koe/$$(cat VERSION).lua
	install -m 644 README.md LICENSE CITATION.cff $(SHARE)/doc/koe/

# The release tarball: every file git tracks, as it is in this tree, under koe-VERSION/, with the
# VERSION file the build reads when there is no .git (core/version.h). Reproducible: sorted, owner 0,
# mtime that of the commit that last changed VERSION, gzip without a name or time stamp. Beside it the
# Spack recipe and the EasyBuild easyconfig (launch/packaging/) with its version, sha256 and DIST_URL
# (where the tarball will be published; default this directory) filled in.
VERSION_NUM := $(shell cat VERSION)
DIST := koe-$(VERSION_NUM)
DIST_URL ?= file://$(abspath $(BUILD))
dist:
	@[ -e .git ] || { echo "make dist: needs the git checkout (it packs the files git tracks)"; exit 1; }
	@mkdir -p $(BUILD)/spack/koe
	set -o pipefail; git ls-files -z | tar --null -T - --transform 's,^,$(DIST)/,' --sort=name --owner=0 --group=0 \
	  --numeric-owner --mtime=@$$(git log -1 --format=%ct -- VERSION) -cf - | gzip -n > $(BUILD)/$(DIST).tar.gz.tmp
	mv $(BUILD)/$(DIST).tar.gz.tmp $(BUILD)/$(DIST).tar.gz
	sha=$$(sha256sum $(BUILD)/$(DIST).tar.gz | cut -d' ' -f1); \
	for f in package.py:spack/koe/package.py koe.eb:$(DIST)-gompi.eb; do \
	  sed -e "s|@VERSION@|$(VERSION_NUM)|g; s|@URL@|$(DIST_URL)|g; s|@SHA256@|$$sha|g" \
	    launch/packaging/$${f%%:*} > $(BUILD)/$${f#*:}; done
	@echo "make dist: $(BUILD)/$(DIST).tar.gz, $(BUILD)/spack/koe/package.py, $(BUILD)/$(DIST)-gompi.eb"

clean:
	rm -rf build build-san build-fuzz
