# Finds OpenBLAS, preferring its OpenMP build: inside our OpenMP-parallel kernels an
# OpenMP OpenBLAS runs single-threaded by itself, outside them it uses every core.
# Defines the imported target LongnetOpenBLAS::OpenBLAS.
include(FindPackageHandleStandardArgs)

if(NOT TARGET LongnetOpenBLAS::OpenBLAS)
  set(_arch_dir "${CMAKE_LIBRARY_ARCHITECTURE}")
  find_library(LongnetOpenBLAS_LIBRARY
    NAMES openblas
    HINTS /usr/lib/${_arch_dir}/openblas-openmp /usr/lib/${_arch_dir}/openblas-pthread
          /usr/lib/${_arch_dir} /usr/local/lib /usr/lib64 /usr/lib)
  get_filename_component(_lib_dir "${LongnetOpenBLAS_LIBRARY}" DIRECTORY)
  get_filename_component(_variant "${_lib_dir}" NAME)
  find_path(LongnetOpenBLAS_INCLUDE_DIR
    NAMES cblas.h
    HINTS /usr/include/${_arch_dir}/${_variant} /usr/include/${_arch_dir}/openblas-openmp
          /usr/include/openblas /usr/local/include /usr/include
    NO_DEFAULT_PATH)
  if(NOT LongnetOpenBLAS_INCLUDE_DIR)
    find_path(LongnetOpenBLAS_INCLUDE_DIR NAMES cblas.h PATH_SUFFIXES openblas)
  endif()
  set(LongnetOpenBLAS_OPENMP OFF)
  if(_variant STREQUAL "openblas-openmp")
    set(LongnetOpenBLAS_OPENMP ON)
  endif()
endif()

find_package_handle_standard_args(LongnetOpenBLAS
  REQUIRED_VARS LongnetOpenBLAS_LIBRARY LongnetOpenBLAS_INCLUDE_DIR)

if(LongnetOpenBLAS_FOUND AND NOT TARGET LongnetOpenBLAS::OpenBLAS)
  add_library(LongnetOpenBLAS::OpenBLAS UNKNOWN IMPORTED)
  set_target_properties(LongnetOpenBLAS::OpenBLAS PROPERTIES
    IMPORTED_LOCATION "${LongnetOpenBLAS_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${LongnetOpenBLAS_INCLUDE_DIR}")
endif()
mark_as_advanced(LongnetOpenBLAS_LIBRARY LongnetOpenBLAS_INCLUDE_DIR)
