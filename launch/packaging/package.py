# launch/packaging/package.py — the Spack recipe of koe, built from the release tarball that `make dist`
# makes. A tarball cannot hold its own checksum, so `make dist` writes BUILD/spack/koe/package.py from
# this file with the version, URL and sha256 filled in (launch/README.md, Packaging); copy that
# directory into a Spack repository's packages/ and `spack install koe`. Spack's builtin repository
# may lack some of these libraries under these names (kissfft, inih, soxr): a site adds them or
# declares the system's as externals (packages.yaml), as for any package.
from spack.package import *


class Koe(MakefilePackage):
    """Self-supervised speech pretraining (BEST-RQ, HuBERT, wav2vec 2.0) on CPU clusters (MPI + HDF5 + oneDNN)."""

    url = "@URL@/koe-@VERSION@.tar.gz"

    license("MIT")

    version("@VERSION@", sha256="@SHA256@")

    depends_on("gmake", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("help2man", type="build")  # man pages from `koe help` at install
    depends_on("mpi")
    depends_on("hdf5+mpi")
    depends_on("openblas threads=openmp")
    depends_on("onednn")
    depends_on("libsndfile")
    depends_on("zstd")
    depends_on("soxr")
    depends_on("kissfft")
    depends_on("inih")
    depends_on("espeak-ng")
    depends_on("jansson")

    def _make_args(self):
        # Spack's compiler wrappers add the target's -march: koe's own (native) is turned off; the
        # pkg-config names of this spec's MPI C library and HDF5
        mpi_pc = {"openmpi": "ompi-c", "mpich": "mpich", "mvapich2": "mvapich2"}.get(self.spec["mpi"].name, "mpi")
        return ["BUILD=build", "MARCH=", "WERROR=0", "MPI_PC=" + mpi_pc, "HDF5_PC=hdf5", "PREFIX=" + self.prefix]

    def build(self, spec, prefix):
        make(*self._make_args(), "build/koe", "build/hdf5-plugins/libh5zstd.so")

    def install(self, spec, prefix):
        make(*self._make_args(), "install")

    def setup_run_environment(self, env):
        env.prepend_path("HDF5_PLUGIN_PATH", self.prefix.lib.koe.join("hdf5-plugins"))
