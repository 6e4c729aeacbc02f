#!/usr/bin/env bash
# dist.sh — the release: `make dist` packs the tarball and fills in the Spack recipe and the
# EasyBuild easyconfig (launch/packaging/). Neither tool runs here, so: the generated package.py is
# loaded with stand-ins of spack.package's names and its own build() and install() are run — their
# make commands — on the tarball extracted outside git; the installed `koe --version` says the
# VERSION file's number (no git to ask); the run environment's HDF5_PLUGIN_PATH holds the plugin.
# The easyconfig parses as Python, points at the same tarball with its sha256, and its make
# commands are valid for the extracted Makefile (make -n).
set -euo pipefail
T=$KOE_TMP/dist
unset BUILD SAN  # the tarball is built as a packager would, not as this suite's build
mkdir -p "$T"
V=$(cat "$KOE_ROOT/VERSION")
make --no-print-directory -C "$KOE_ROOT" dist BUILD="$T/out" DIST_URL=file://"$T/out" > "$T/dist.log"
tar -xzf "$T/out/koe-$V.tar.gz" -C "$T"
[ -f "$T/koe-$V/Makefile" ] && [ ! -e "$T/koe-$V/.git" ]

"$PYTHON" - "$T" "$V" <<'PY'
import hashlib, os, subprocess, sys, types
T, V = sys.argv[1:3]
tarball = f"{T}/out/koe-{V}.tar.gz"
sha = hashlib.sha256(open(tarball, "rb").read()).hexdigest()
src = f"{T}/koe-{V}"

class Prefix(str):  # spack's Prefix: attribute access joins path components
    def __getattr__(self, name): return Prefix(os.path.join(self, name))
    def join(self, name): return Prefix(os.path.join(self, name))
calls = {"version": [], "depends_on": [], "license": []}
sp = types.ModuleType("spack.package")
sp.MakefilePackage = type("MakefilePackage", (), {})
for d in calls:
    setattr(sp, d, lambda *a, _d=d, **k: calls[_d].append((a, k)))
sp.make = lambda *args: subprocess.run(["make", "-j2", *args], cwd=src, check=True, stdout=subprocess.DEVNULL)
sp.__all__ = ["MakefilePackage", "make", *calls]
sys.modules["spack"], sys.modules["spack.package"] = types.ModuleType("spack"), sp
ns = {}
exec(compile(open(f"{T}/out/spack/koe/package.py").read(), "package.py", "exec"), ns)
Koe = ns["Koe"]
assert Koe.url == f"file://{T}/out/koe-{V}.tar.gz", Koe.url
assert calls["version"] == [((V,), {"sha256": sha})], calls["version"]
pkg = Koe()
pkg.prefix = Prefix(f"{T}/prefix")
pkg.spec = {"mpi": types.SimpleNamespace(name="openmpi")}
pkg.build(pkg.spec, pkg.prefix)
pkg.install(pkg.spec, pkg.prefix)
env = types.SimpleNamespace(paths=[])
env.prepend_path = lambda var, path: env.paths.append((var, path))
pkg.setup_run_environment(env)
assert env.paths == [("HDF5_PLUGIN_PATH", f"{T}/prefix/lib/koe/hdf5-plugins")], env.paths
assert os.path.exists(f"{T}/prefix/lib/koe/hdf5-plugins/libh5zstd.so")

eb = {}
exec(compile(open(f"{T}/out/koe-{V}-gompi.eb").read(), "koe.eb", "exec"), eb)
assert eb["version"] == V and eb["sources"] == ["koe-%(version)s.tar.gz"] and eb["checksums"] == [sha], eb
assert eb["source_urls"] == [f"file://{T}/out"], eb["source_urls"]
for opts, goal in ((eb["buildopts"], ""), (eb["installopts"].replace("%(installdir)s", T + "/eb"), "install")):
    subprocess.run(f"CFLAGS='-O2 -march=x86-64' make -n {goal} {opts}", shell=True, cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
print("spack recipe built and installed koe from", tarball)
PY
out=$("$T/prefix/bin/koe" --version)
[ "$out" = "koe $V" ] || { echo "koe --version from the tarball: '$out', expected 'koe $V'"; exit 1; }
echo "dist: ok ($out)"
