-- koe.lua — Lmod modulefile for an installed koe. `make install` copies it to
-- PREFIX/share/modulefiles/koe/VERSION.lua; `module use PREFIX/share/modulefiles` then
-- `module load koe` puts koe on PATH, its man pages on MANPATH, its bash completion in reach and
-- the HDF5 zstd filter plugin on HDF5_PLUGIN_PATH (h5dump and h5py read koe's corpus shards).
-- The prefix is worked out from where this file lies, so an installation (or a DESTDIR staging
-- tree) can be moved without editing it.
local prefix = myFileName():gsub("/share/modulefiles/koe/[^/]+%.lua$", "")
local version = myModuleVersion()

whatis("Name: koe")
whatis("Version: " .. version)
whatis("Description: self-supervised speech pretraining (BEST-RQ, HuBERT, wav2vec 2.0) on CPU clusters")
help([[
koe ]] .. version .. [[: self-supervised speech pretraining on CPU clusters.
  koe help            the commands;  man koe-COMMAND  each command's options and recipe keys
  ]] .. prefix .. [[/share/koe/recipes   the papers' recipes;  .../share/koe/launch  Slurm templates
]])

prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("MANPATH", pathJoin(prefix, "share/man"))
prepend_path("HDF5_PLUGIN_PATH", pathJoin(prefix, "lib/koe/hdf5-plugins"))
prepend_path("XDG_DATA_DIRS", pathJoin(prefix, "share"))
