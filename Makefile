# SPDX-License-Identifier: MIT
# Thin wrapper over Meson. `make run` and `make test` install what they need first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
MESON_NATIVE = --native-file build-aux/debian.ini
PYTEST_ARGS ?=

.PHONY: all deps run build test test-deps asan unit integration fuzz fuzz-run format format-check clean

all: build

deps:
	@tools/install-deps.sh run

build: deps
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) $(MESON_NATIVE) --buildtype=release -Db_ndebug=false
	@ninja -C $(BUILD)

run: build
	./$(BUILD)/viaduct

test-deps:
	@tools/install-deps.sh test

asan: test-deps
	@test -f $(ASAN_BUILD)/build.ninja || CC=clang meson setup $(ASAN_BUILD) $(MESON_NATIVE) \
		-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true -Dalloc_debug=true
	@ninja -C $(ASAN_BUILD)

unit: asan
	@ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(ASAN_BUILD) --suite unit --suite fuzz-replay --print-errorlogs

integration: asan
	@cd tests/integration && VIADUCT_BIN=$(CURDIR)/$(ASAN_BUILD)/viaduct /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Unit tests and fuzz-corpus replay, then the integration suite; ends with pytest's summary line.
test: unit integration

fuzz: test-deps
	@test -f $(FUZZ_BUILD)/build.ninja || CC=clang meson setup $(FUZZ_BUILD) $(MESON_NATIVE) -Dfuzz=true -Db_lundef=false
	@ninja -C $(FUZZ_BUILD)
	@echo "fuzzers in $(FUZZ_BUILD)/tests/fuzz; e.g. make fuzz-run TARGET=h1_request SECONDS=600"

TARGET ?= h1_request
SECONDS ?= 60
fuzz-run: fuzz
	@mkdir -p fuzz-out/$(TARGET)
	./$(FUZZ_BUILD)/tests/fuzz/fuzz_$(TARGET) -max_total_time=$(SECONDS) -dict=tests/fuzz/http.dict \
		fuzz-out/$(TARGET) tests/fuzz/corpus/$(TARGET)

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

format-check:
	@git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
