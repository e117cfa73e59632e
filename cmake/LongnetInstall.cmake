# Install rules: libraries + headers + an exported CMake package (find_package(longnet
# CONFIG) -> longnet::longnet) with a version file, and a pkg-config file.
include(CMakePackageConfigHelpers)

set(LONGNET_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/longnet)

install(TARGETS ${LONGNET_LAYER_TARGETS} longnet
        EXPORT longnetTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/longnet DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/include/longnet/core/build_info.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/longnet/core)
install(EXPORT longnetTargets NAMESPACE longnet:: DESTINATION ${LONGNET_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/longnetConfig.cmake.in
  ${PROJECT_BINARY_DIR}/longnetConfig.cmake INSTALL_DESTINATION ${LONGNET_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/longnetConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/longnetConfig.cmake ${PROJECT_BINARY_DIR}/longnetConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindLongnetOpenBLAS.cmake
        DESTINATION ${LONGNET_CMAKE_DIR})

# pkg-config: the layer libraries from the top layer down, then their dependencies.
set(LONGNET_PC_LIBS "")
set(_layers ${LONGNET_LAYER_TARGETS})
list(REVERSE _layers)
foreach(target IN LISTS _layers)
  string(APPEND LONGNET_PC_LIBS " -l${target}")
endforeach()
string(APPEND LONGNET_PC_LIBS " ${LongnetOpenBLAS_LIBRARY} -fopenmp -lpthread")
if(LONGNET_WITH_CUDA)
  string(APPEND LONGNET_PC_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcudart")
endif()
if(LONGNET_WITH_NCCL)
  string(APPEND LONGNET_PC_LIBS " ${LONGNET_NCCL_LIBRARY}")
endif()
if(LONGNET_WITH_MPI)
  foreach(lib IN LISTS MPI_CXX_LIBRARIES)
    string(APPEND LONGNET_PC_LIBS " ${lib}")
  endforeach()
endif()
if(LONGNET_SANITIZE)
  string(APPEND LONGNET_PC_LIBS " -fsanitize=address,undefined")
endif()
set(LONGNET_PC_CFLAGS "-std=c++20")
if(LONGNET_WITH_MPI)
  foreach(dir IN LISTS MPI_CXX_INCLUDE_DIRS)
    string(APPEND LONGNET_PC_CFLAGS " -I${dir}")
  endforeach()
endif()
file(RELATIVE_PATH LONGNET_PC_RELATIVE_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/longnet.pc.in ${PROJECT_BINARY_DIR}/longnet.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/longnet.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
