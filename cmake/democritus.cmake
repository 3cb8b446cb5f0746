# SPDX-License-Identifier: MIT
#
# Helpers every module's CMakeLists.txt uses, so modules register their own libraries, unit
# tests and fuzz harnesses without touching shared files.

# dc_module(<name> SOURCES <files...> DEPS <targets...>)
# Static library dc_<name>; includes resolve from src/ ("base/base.h").
function(dc_module name)
    cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
    add_library(dc_${name} STATIC ${M_SOURCES})
    target_include_directories(dc_${name} PUBLIC ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/include)
    target_compile_definitions(dc_${name} PUBLIC _GNU_SOURCE)
    target_compile_options(dc_${name} PRIVATE ${DC_C_FLAGS})
    target_link_libraries(dc_${name} PUBLIC ${M_DEPS})
    target_link_options(dc_${name} INTERFACE ${DC_LINK_FLAGS})
endfunction()

# dc_program(<name> SOURCES <files...> DEPS <targets...>): an executable in bin/.
function(dc_program name)
    cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
    add_executable(${name} ${M_SOURCES})
    target_compile_options(${name} PRIVATE ${DC_C_FLAGS})
    target_compile_definitions(${name} PRIVATE _GNU_SOURCE)
    target_link_options(${name} PRIVATE ${DC_LINK_FLAGS})
    target_link_libraries(${name} PRIVATE ${M_DEPS})
endfunction()

# dc_unit_test(<module> DEPS <targets...> [SOURCES extra...])
# tests/unit/<module>_test.c -> binary <module>_test, ctest name unit.<module>, label unit.
function(dc_unit_test module)
    cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
    if(NOT TARGET PkgConfig::CMOCKA)
        return()
    endif()
    set(src ${CMAKE_SOURCE_DIR}/tests/unit/${module}_test.c)
    add_executable(${module}_test ${src} ${M_SOURCES})
    target_compile_options(${module}_test PRIVATE ${DC_C_FLAGS})
    target_compile_definitions(${module}_test PRIVATE _GNU_SOURCE
        DC_SOURCE_DIR="${CMAKE_SOURCE_DIR}" DC_SHARED_DIR="${DC_SHARED_DIR}")
    target_link_options(${module}_test PRIVATE ${DC_LINK_FLAGS})
    target_link_libraries(${module}_test PRIVATE ${M_DEPS} PkgConfig::CMOCKA)
    set_target_properties(${module}_test PROPERTIES RUNTIME_OUTPUT_DIRECTORY
        ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME unit.${module} COMMAND ${module}_test)
    set_tests_properties(unit.${module} PROPERTIES LABELS unit)
endfunction()

# dc_fuzz_target(<name> DEPS <targets...>)
# tests/fuzz/<name>_fuzz.c -> <name>_fuzz (libFuzzer). ctest fuzz.<name> replays the corpus in
# tests/fuzz/corpus/<name>/ once; `make fuzz` runs each harness for a bounded time.
function(dc_fuzz_target name)
    cmake_parse_arguments(M "" "" "DEPS" ${ARGN})
    if(NOT DC_FUZZ)
        return()
    endif()
    add_executable(${name}_fuzz ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}_fuzz.c)
    target_compile_options(${name}_fuzz PRIVATE ${DC_C_FLAGS} -fsanitize=fuzzer)
    target_compile_definitions(${name}_fuzz PRIVATE _GNU_SOURCE)
    target_link_options(${name}_fuzz PRIVATE ${DC_LINK_FLAGS} -fsanitize=fuzzer)
    target_link_libraries(${name}_fuzz PRIVATE ${M_DEPS})
    set_target_properties(${name}_fuzz PROPERTIES RUNTIME_OUTPUT_DIRECTORY
        ${CMAKE_BINARY_DIR}/fuzz)
    set(corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
    add_test(NAME fuzz.${name} COMMAND ${name}_fuzz -runs=0 ${corpus})
    set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz)
endfunction()

# dc_protobuf(<target> PROTOS <files relative to proto/...>)
# Runs protoc-c on each .proto (proto_path = proto/) into the build tree and adds the generated
# .pb-c.c files to <target>; includes resolve as "libp2p/kad.pb-c.h". Generated code is built
# without our warning flags (it is not ours to lint).
find_program(PROTOC_C protoc-c)
pkg_check_modules(PROTOBUF_C IMPORTED_TARGET libprotobuf-c)
function(dc_protobuf target)
    cmake_parse_arguments(M "" "" "PROTOS" ${ARGN})
    if(NOT PROTOC_C OR NOT TARGET PkgConfig::PROTOBUF_C)
        message(FATAL_ERROR "protoc-c and libprotobuf-c are needed: run scripts/install-deps")
    endif()
    set(out_dir ${CMAKE_BINARY_DIR}/proto)
    set(gen_sources)
    foreach(p ${M_PROTOS})
        string(REGEX REPLACE "\\.proto$" "" stem ${p})
        set(c ${out_dir}/${stem}.pb-c.c)
        set(h ${out_dir}/${stem}.pb-c.h)
        add_custom_command(OUTPUT ${c} ${h}
            COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
            COMMAND ${PROTOC_C} --proto_path=${CMAKE_SOURCE_DIR}/proto --c_out=${out_dir}
                    ${CMAKE_SOURCE_DIR}/proto/${p}
            DEPENDS ${CMAKE_SOURCE_DIR}/proto/${p}
            COMMENT "protoc-c ${p}")
        list(APPEND gen_sources ${c})
    endforeach()
    add_library(${target}_proto STATIC ${gen_sources})
    target_include_directories(${target}_proto PUBLIC ${out_dir})
    target_link_libraries(${target}_proto PUBLIC PkgConfig::PROTOBUF_C)
    target_compile_options(${target}_proto PRIVATE -w)
    if(DC_SANITIZE)
        target_compile_options(${target}_proto PRIVATE -fsanitize=address,undefined)
    endif()
    target_link_libraries(${target} PUBLIC ${target}_proto)
endfunction()
