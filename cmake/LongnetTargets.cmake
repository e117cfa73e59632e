# longnet_add_layer(<layer> SOURCES ... [CUDA_SOURCES ...] [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# One static (or shared) library per layer of DESIGN section 3: target longnet_<layer>,
# alias longnet::<layer>. A layer links only the layers listed before it.
set(LONGNET_LAYER_TARGETS "" CACHE INTERNAL "")

function(longnet_add_layer layer)
  cmake_parse_arguments(ARG "" "" "SOURCES;CUDA_SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(target longnet_${layer})
  set(sources ${ARG_SOURCES})
  if(LONGNET_WITH_CUDA)
    list(APPEND sources ${ARG_CUDA_SOURCES})
  endif()
  add_library(${target} ${sources})
  add_library(longnet::${layer} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${layer} OUTPUT_NAME longnet_${layer})
  target_include_directories(${target}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
           $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS}
                                  PRIVATE ${ARG_PRIVATE_DEPS} $<BUILD_INTERFACE:longnet_warnings>)
  if(LONGNET_WITH_CUDA)
    set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
  endif()
  if(LONGNET_SANITIZE)
    # A sanitized library needs the sanitizer runtimes in whatever links it.
    target_link_options(${target} INTERFACE -fsanitize=address,undefined)
  endif()
  set(LONGNET_LAYER_TARGETS ${LONGNET_LAYER_TARGETS} ${target} CACHE INTERNAL "")
endfunction()
