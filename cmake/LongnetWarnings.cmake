# Warnings (as errors for our own code when LONGNET_WARNINGS_AS_ERRORS) and sanitizers.
add_library(longnet_warnings INTERFACE)
target_compile_options(longnet_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wcast-align -Wunused -Woverloaded-virtual -Wimplicit-fallthrough>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
if(LONGNET_WARNINGS_AS_ERRORS)
  target_compile_options(longnet_warnings INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>)
endif()

# Sanitizers apply to everything this project builds (library, tests, program), since
# the runtime must be in every executable. CUDA device code is not instrumented.
if(LONGNET_SANITIZE)
  set(_longnet_san -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_longnet_san}>"
                      "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fsanitize=address,-fsanitize=undefined,-fno-omit-frame-pointer>")
  add_link_options(${_longnet_san})
endif()

# Fuzzing builds instrument the whole library for coverage-guided fuzzing.
if(LONGNET_BUILD_FUZZERS AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
