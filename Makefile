# ambit — top-level, non-recursive build.
#
#   make            programs into build/bin (-Werror, -O2)
#   make deps       Debian packages + wolfSSL with AES-NI (.deps/wolfssl)
#   make test       deps, ASan/UBSan build, unit tests, fuzz corpus replay,
#                   system tests; ends with "N passed, N failed"
#   make fuzz       every libFuzzer harness for FUZZ_SECONDS (default 60)
#   make bench      benchmarks (long; not part of make test)
#   make crypto-speed  AES-128-GCM, Debian's wolfSSL vs ours
#
# Each part of the tree contributes a module.mk that appends to BINS,
# UNIT_TESTS and FUZZERS; see redirector/module.mk for the pattern.

O        ?= build
SAN      ?=
CC       ?= gcc
ROOT     := $(CURDIR)

WOLFSSL_PREFIX := $(ROOT)/.deps/wolfssl
WOLFSSL_CFLAGS := -I$(WOLFSSL_PREFIX)/include -DWOLFSSL_USE_OPTIONS_H
WOLFSSL_LIBS   := -L$(WOLFSSL_PREFIX)/lib -Wl,-rpath,$(WOLFSSL_PREFIX)/lib -lwolfssl
NL_CFLAGS      := -I/usr/include/libnl3

OPT      ?= -O2
CFLAGS   := -std=gnu11 -Wall -Wextra -Werror -g $(OPT) -D_GNU_SOURCE -pthread \
            -fno-strict-aliasing -I$(ROOT) $(NL_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS  := -pthread $(EXTRA_LDFLAGS)
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

BINS       :=
UNIT_TESTS :=
FUZZERS    :=

objs = $(patsubst %.c,$(O)/obj/%.o,$(1))

.PHONY: all deps test unit fuzz fuzz-build fuzz-replay bench bench-quick crypto-speed clean format format-check demo
all:

-include redirector/module.mk
-include node-proxy/module.mk
-include cni-plugin/module.mk
-include certs/module.mk

all: $(BINS)
unit: $(UNIT_TESTS)

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CFLAGS_$(subst /,_,$*)) -MMD -MP -c $< -o $@

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)

deps:
	@./tools/deps.sh

# make test: everything a fresh Debian 12 machine needs, then the whole suite
# under AddressSanitizer + UndefinedBehaviorSanitizer.
NPROC := $(shell nproc 2>/dev/null || echo 2)
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) O=build/san SAN=1 all unit
	@$(MAKE) --no-print-directory -j$(NPROC) fuzz-build
	@./tests/run-all.sh build/san

# --- fuzzing (clang + libFuzzer) -------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_O       := build/fuzz
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -D_GNU_SOURCE -pthread -I$(ROOT) $(NL_CFLAGS) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -DAMBIT_FUZZ
fuzz-build: $(foreach f,$(FUZZERS),$(FUZZ_O)/fuzz_$(f))
# A harness is rebuilt when any of its sources changes (headers are not
# tracked: make clean after changing one).
.SECONDEXPANSION:
$(FUZZ_O)/fuzz_%: $$(FUZZ_SRCS_$$*)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(FUZZ_SRCS_$*) -o $@ $(FUZZ_LIBS_$*)
fuzz: fuzz-build
	@set -e; for f in $(FUZZERS); do \
		mkdir -p tests/fuzz/corpus/$$f; \
		echo "fuzz: $$f for $(FUZZ_SECONDS)s"; \
		$(FUZZ_O)/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
			-artifact_prefix=$(FUZZ_O)/crash-$$f- tests/fuzz/corpus/$$f; \
	done

# --- benchmarks --------------------------------------------------------------
crypto-speed: deps $(O)/bin/crypto-speed
	@$(O)/bin/crypto-speed /usr/lib/x86_64-linux-gnu/libwolfssl.so.35 "Debian libwolfssl35 (stock)"
	@$(O)/bin/crypto-speed $(WOLFSSL_PREFIX)/lib/libwolfssl.so "ambit .deps/wolfssl (AES-NI)"

$(O)/bin/crypto-speed: tools/crypto-speed.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ -ldl

# make demo: a single-node mesh with real pods, identities, policy, metrics.
demo: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@/usr/bin/python3 tools/demo/demo.py --bin $(O)/bin

# make bench: ambient vs per-pod sidecars, side by side (docs/benchmarks.md);
# bench-quick: the same in a few minutes (1 s runs, 1 and 10 pods).
bench:
	@./tools/deps.sh bench
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@./tests/bench/run.sh $(O)

bench-quick:
	@./tools/deps.sh bench
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@./tests/bench/run.sh $(O) quick

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
