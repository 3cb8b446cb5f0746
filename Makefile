# SPDX-License-Identifier: MIT
#
# The human entry point; CMake does the work.
#   make          Release build in build/ (build/bin/democritus, build/bin/toml-decode, tools)
#   make run      install what is missing, build, start a node with the default config
#   make test     install, build the ASan+UBSan tree in build/asan/, lint, run every test
#   make bench    build and run the benchmarks under bench/
#   make fuzz     run each libFuzzer harness for FUZZ_SECONDS (default 60)
#   make format   rewrite sources with clang-format
# Variables: JOBS (parallel build jobs), ARGS (extra daemon flags for `make run`),
#            CTEST_ARGS (e.g. "-L unit" or "-R toml"), FUZZ_SECONDS,
#            GPU (cuda|vulkan: build llama.cpp's GPU backend; cpu: turn it off again).

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=
GPU ?=

# GPU backends are llama.cpp's own CMake options (docs/engine.md). A CMake cache remembers them,
# so GPU=cpu is how a tree built with GPU=cuda goes back to CPU only.
ifeq ($(GPU),cuda)
override CMAKE_FLAGS += -DGGML_CUDA=ON
else ifeq ($(GPU),vulkan)
override CMAKE_FLAGS += -DGGML_VULKAN=ON
else ifeq ($(GPU),cpu)
override CMAKE_FLAGS += -DGGML_CUDA=OFF -DGGML_VULKAN=OFF
else ifneq ($(GPU),)
$(error GPU=$(GPU) is not one of cuda, vulkan, cpu)
endif
BUILD := build
ASAN := build/asan

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

.PHONY: all deps build run test format-check format bench fuzz clean docs

all: build

deps:
	@scripts/install-deps

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# The demo model: served only when no model is configured and models/ holds none (the daemon
# decides, and says so in its log). Random weights, so it answers gibberish; it lives in build/
# so the work tree never changes.
DEMO_MODEL := $(BUILD)/demo/democritus-demo-q8_0.gguf

$(DEMO_MODEL):
	@mkdir -p $(dir $@)
	$(BUILD)/bin/gguf-gen --arch llama --dim 256 --layers 4 --heads 8 --kv-heads 4 --vocab 2048 \
		--ctx 2048 --type q8_0 --seed 42 -o $@

run: deps build
	@$(MAKE) --no-print-directory $(DEMO_MODEL)
	$(BUILD)/bin/democritus daemon --demo-model $(DEMO_MODEL) $(ARGS)

$(ASAN)/CMakeCache.txt:
	CC=clang cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DDC_SANITIZE=ON -DDC_WERROR=ON \
		-DDC_FUZZ=ON $(CMAKE_FLAGS) >/dev/null

test: deps $(ASAN)/CMakeCache.txt format-check
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "clang-format: clean"

format:
	clang-format -i $(FORMAT_FILES)

# bench/api is a script, not a CMake target: it builds llama-server (bench/build-llama-server)
# and serves the same model with both.
bench: deps build
	@for b in $(BUILD)/bench/*; do [ -x "$$b" ] && "$$b"; done; true
	DC_BUILD_DIR=$(BUILD) bench/api

fuzz: deps $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j $(JOBS)
	@for f in $(ASAN)/fuzz/*_fuzz; do \
		name=$$(basename $$f _fuzz); mkdir -p tests/fuzz/corpus/$$name; \
		echo "== $$name ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 tests/fuzz/corpus/$$name || exit 1; \
	done

clean:
	rm -rf $(BUILD)

# Regenerates config.example.toml and the part of docs/configuration.md after its marker line.
docs: build
	$(BUILD)/bin/democritus config example > config.example.toml
	sed '/^<!-- generated: democritus config docs -->$$/q' docs/configuration.md > docs/.cfg.tmp
	$(BUILD)/bin/democritus config docs >> docs/.cfg.tmp
	mv docs/.cfg.tmp docs/configuration.md
