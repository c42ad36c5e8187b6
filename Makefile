# memsnap: the commands people type. The build itself is Meson + ninja.
#   make                build (build/)
#   make demo           install missing Debian packages, build, run the demo
#                       (NODES=2: and two nodes, one resuming the other's build before its upload)
#   make demo-daemon    the demo's story through memsnapd and the memsnap CLI (STORE=s3: local S3)
#   make test           install missing Debian packages, build, run every test
#   make test-sanitize  the suite under ASan+UBSan, the concurrency tests under TSan
#   make bench          benchmarks: a table, and build/bench.json
#   make fuzz           short libFuzzer runs of the parsers
#   make format         clang-format every C file
BUILD      ?= build
JOBS       ?= $(shell nproc)
MESON_TEST  = meson test -C $(1) --print-errorlogs --num-processes $(JOBS) $(2)

.PHONY: all deps demo demo-daemon test test-sanitize test-asan test-tsan bench fuzz format clean

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	scripts/deps.sh --build
	meson setup $(BUILD)

deps:
	scripts/deps.sh

demo: deps all
	STORE=$(STORE) NODES=$(NODES) scripts/demo.sh $(BUILD)

demo-daemon: deps all
	STORE=$(STORE) scripts/demo.sh $(BUILD) daemon

test: deps all
	scripts/run-tests.sh $(BUILD)

build-asan/build.ninja:
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false

build-tsan/build.ninja:
	meson setup build-tsan -Db_sanitize=thread -Db_lundef=false

test-asan: deps build-asan/build.ninja
	ninja -C build-asan
	scripts/run-tests.sh build-asan

test-tsan: deps build-tsan/build.ninja
	ninja -C build-tsan
	scripts/run-tests.sh build-tsan --suite concurrency

test-sanitize: test-asan test-tsan

bench: deps all
	scripts/run-bench.sh $(BUILD)

build-fuzz/build.ninja:
	CC=clang-14 meson setup build-fuzz -Dfuzz=true -Db_lundef=false -Db_sanitize=address,undefined

fuzz: deps build-fuzz/build.ninja
	ninja -C build-fuzz fuzz/fuzz_header fuzz/fuzz_handshake fuzz/fuzz_api fuzz/fuzz_peer \
		fuzz/fuzz_snapfile fuzz/fuzz_s3_xml fuzz/fuzz_metadata fuzz/fuzz_checksums \
		fuzz/gen_seeds
	scripts/run-fuzz.sh build-fuzz

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-asan build-tsan build-fuzz
