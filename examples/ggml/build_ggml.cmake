# Configures and builds ggml (CPU backend, static, Release) from GGML_SRC into
# BUILD_DIR, with its static libraries written to OUT_DIR. Run with `cmake -P`
# by examples/ggml/meson.build on every build: CMake's own dependency tracking
# decides what to rebuild, so an edited ggml tree is picked up.
#
# Parallelism: cmake --build honours CMAKE_BUILD_PARALLEL_LEVEL from the
# environment (e.g. CMAKE_BUILD_PARALLEL_LEVEL=2 meson compile -C build-ggml).
cmake_minimum_required(VERSION 3.15) # cmake --build with several --target

foreach(var GGML_SRC BUILD_DIR OUT_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "build_ggml.cmake: -D${var}=... is required")
  endif()
endforeach()
# Meson passes paths relative to its build root, the working directory here; the
# ggml build needs them absolute (its own relative paths start at BUILD_DIR).
foreach(var GGML_SRC BUILD_DIR OUT_DIR)
  get_filename_component(${var} "${${var}}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
endforeach()
if(NOT EXISTS "${GGML_SRC}/include/ggml.h" OR NOT EXISTS "${GGML_SRC}/CMakeLists.txt")
  message(FATAL_ERROR "build_ggml.cmake: ${GGML_SRC} is not a ggml source tree (no include/ggml.h)")
endif()

# Configure once; later builds let CMake re-run its configure when ggml's CMake files change.
if(NOT EXISTS "${BUILD_DIR}/CMakeCache.txt")
  set(generator)
  find_program(NINJA ninja)
  if(NINJA)
    set(generator -G Ninja)
  endif()
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${GGML_SRC}" -B "${BUILD_DIR}" ${generator}
      -DCMAKE_BUILD_TYPE=Release
      -DBUILD_SHARED_LIBS=OFF
      # Static archives linked into a (position-independent) executable.
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON
      -DCMAKE_ARCHIVE_OUTPUT_DIRECTORY=${OUT_DIR}
      -DGGML_CPU=ON
      -DGGML_BACKEND_DL=OFF
      -DGGML_BUILD_TESTS=OFF
      -DGGML_BUILD_EXAMPLES=OFF
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE "${BUILD_DIR}/CMakeCache.txt")
    message(FATAL_ERROR "build_ggml.cmake: configuring ggml failed (${rc})")
  endif()
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target ggml ggml-base ggml-cpu
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "build_ggml.cmake: building ggml failed (${rc})")
endif()

foreach(lib ggml ggml-base ggml-cpu)
  if(NOT EXISTS "${OUT_DIR}/lib${lib}.a")
    message(FATAL_ERROR "build_ggml.cmake: ${OUT_DIR}/lib${lib}.a was not produced")
  endif()
endforeach()
