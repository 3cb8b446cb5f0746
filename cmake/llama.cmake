# SPDX-License-Identifier: MIT
#
# llama.cpp as a CMake subproject: only the `llama` library and ggml (no common, tools,
# examples, server or tests), static, and always optimized -- also in the Debug ASan tree, where
# our sanitizer and fuzzer flags stay on our own targets (DC_C_FLAGS is a target property) and
# llama.cpp is built as an ordinary optimized library. The source is the checkout that
# scripts/fetch-llama-cpp makes (pinned, see docs/engine.md) unless LLAMA_CPP_SOURCE_DIR points
# at another one. GPU backends pass through as llama.cpp's own cache options (GGML_CUDA,
# GGML_VULKAN, ...; `make GPU=cuda|vulkan` sets them).

# The environment variable of the same name is the default too, as scripts/install-deps skips
# the fetch when it is set.
if(DEFINED ENV{LLAMA_CPP_SOURCE_DIR} AND NOT "$ENV{LLAMA_CPP_SOURCE_DIR}" STREQUAL "")
    set(dc_llama_default $ENV{LLAMA_CPP_SOURCE_DIR})
else()
    set(dc_llama_default ${CMAKE_SOURCE_DIR}/build/deps/llama.cpp)
endif()
set(LLAMA_CPP_SOURCE_DIR ${dc_llama_default} CACHE PATH
    "llama.cpp source tree (default: the pinned checkout made by scripts/fetch-llama-cpp)")
if(NOT EXISTS ${LLAMA_CPP_SOURCE_DIR}/include/llama.h
   OR NOT EXISTS ${LLAMA_CPP_SOURCE_DIR}/CMakeLists.txt)
    message(FATAL_ERROR
        "llama.cpp source not found in '${LLAMA_CPP_SOURCE_DIR}'.\n"
        "Run scripts/install-deps (or scripts/fetch-llama-cpp) to fetch the pinned source, "
        "or pass -DLLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp to use a checkout you have.")
endif()

# llama.cpp is C++. In a clang tree (the ASan/fuzz one) use the matching clang++, so that the
# final link -- done by the C++ driver because libllama is C++ -- understands
# -fsanitize=fuzzer and links the same sanitizer runtime as our objects.
if(NOT CMAKE_CXX_COMPILER AND NOT DEFINED ENV{CXX} AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    get_filename_component(dc_cc_dir ${CMAKE_C_COMPILER} DIRECTORY)
    get_filename_component(dc_cc_name ${CMAKE_C_COMPILER} NAME)
    string(REGEX REPLACE "^clang" "clang++" dc_cxx_name ${dc_cc_name})
    if(EXISTS ${dc_cc_dir}/${dc_cxx_name})
        set(CMAKE_CXX_COMPILER ${dc_cc_dir}/${dc_cxx_name})
    else()
        find_program(dc_clangxx NAMES clang++)
        if(dc_clangxx)
            set(CMAKE_CXX_COMPILER ${dc_clangxx})
        endif()
    endif()
endif()
enable_language(CXX)

# Everything set here is scoped to the block, so it reaches llama.cpp's directories and never
# our own (option() honours these plain variables under policy CMP0077, which llama.cpp sets).
block()
    set(BUILD_SHARED_LIBS OFF)
    set(LLAMA_BUILD_COMMON OFF)
    set(LLAMA_BUILD_TESTS OFF)
    set(LLAMA_BUILD_TOOLS OFF)
    set(LLAMA_BUILD_EXAMPLES OFF)
    set(LLAMA_BUILD_SERVER OFF)
    set(LLAMA_BUILD_APP OFF)
    set(LLAMA_BUILD_MTMD OFF)
    set(LLAMA_CURL OFF)
    set(LLAMA_OPENSSL OFF)
    set(LLAMA_ALL_WARNINGS OFF)
    set(GGML_BUILD_TESTS OFF)
    set(GGML_BUILD_EXAMPLES OFF)
    # A cache default, so -DGGML_NATIVE=OFF (portable binaries, packaging) still wins.
    set(GGML_NATIVE ON CACHE BOOL "ggml: optimize the build for the current system")

    # Always optimized. Single-config generators take the configuration from the directory's
    # CMAKE_BUILD_TYPE, so a Debug tree builds llama.cpp as Release; multi-config ones get
    # optimized flags for their Debug configuration.
    if(NOT CMAKE_BUILD_TYPE MATCHES "^(Release|RelWithDebInfo)$")
        set(CMAKE_BUILD_TYPE Release)
    endif()
    foreach(lang C CXX)
        set(CMAKE_${lang}_FLAGS_DEBUG "-O2 -DNDEBUG")
        set(CMAKE_${lang}_FLAGS_MINSIZEREL "-O2 -DNDEBUG")
    endforeach()
    # llama.cpp expects the compilers' defaults (GNU extensions); ours are strict C11.
    set(CMAKE_C_EXTENSIONS ON)
    set(CMAKE_CXX_EXTENSIONS ON)

    # SYSTEM: our code sees llama.h/gguf.h as system headers, so their style never trips our
    # -Werror. EXCLUDE_FROM_ALL: only what our targets link gets built.
    add_subdirectory(${LLAMA_CPP_SOURCE_DIR} ${CMAKE_BINARY_DIR}/llama.cpp EXCLUDE_FROM_ALL SYSTEM)
endblock()
