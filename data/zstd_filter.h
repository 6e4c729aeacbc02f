/* zstd_filter.h — HDF5 filter 32015 (the registered id of the zstd filter) on libzstd.
 * The same source builds into libkoe (registered in-process by h5_init) and, with
 * -DKOE_H5_PLUGIN, into build/hdf5-plugins/libh5zstd.so for h5dump and h5py
 * (HDF5_PLUGIN_PATH=build/hdf5-plugins). */
#pragma once

#define KOE_ZSTD_FILTER_ID 32015

int zstd_filter_register(void); /* 0 or -1 */
