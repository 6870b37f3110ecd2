# HBONE tunnel engine: TLS 1.3 (wolfSSL) + HTTP/2 CONNECT (nghttp2), sans I/O.
# The data plane links $(HBONE_LIB) with $(HBONE_LDLIBS).
HBONE_SRCS   := node-proxy/tls.c node-proxy/hbone.c
HBONE_LIB    := $(O)/lib/libambit-hbone.a
HBONE_LDLIBS := $(WOLFSSL_LIBS) -lnghttp2
CFLAGS_node-proxy_tls := $(WOLFSSL_CFLAGS)

$(HBONE_LIB): $(call objs,$(HBONE_SRCS))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

# Unit tests: two engines wired back to back in memory; certificates are
# made at test time with the openssl CLI.
CFLAGS_tests_unit_test_tls   := $(WOLFSSL_CFLAGS)
CFLAGS_tests_unit_test_hbone := $(WOLFSSL_CFLAGS)
UNIT_TESTS += $(O)/tests/test_tls $(O)/tests/test_hbone
$(O)/tests/test_tls: $(call objs,tests/unit/test_tls.c) $(HBONE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(HBONE_LDLIBS) -lcmocka
$(O)/tests/test_hbone: $(call objs,tests/unit/test_hbone.c) $(HBONE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(HBONE_LDLIBS) -lcmocka

# Fuzzers (clang/libFuzzer, -DAMBIT_FUZZ enables the TLS pass-through hook).
# The wolfSSL include path rides in FUZZ_LIBS: -I applies wherever it sits.
FUZZERS += hbone_authority hbone_server hbone_san hbone_tls
FUZZ_SRCS_hbone_authority := tests/fuzz/fuzz_hbone_authority.c $(HBONE_SRCS)
FUZZ_LIBS_hbone_authority := $(WOLFSSL_CFLAGS) $(HBONE_LDLIBS)
FUZZ_SRCS_hbone_server := tests/fuzz/fuzz_hbone_server.c $(HBONE_SRCS)
FUZZ_LIBS_hbone_server := $(WOLFSSL_CFLAGS) $(HBONE_LDLIBS)
FUZZ_SRCS_hbone_san := tests/fuzz/fuzz_hbone_san.c $(HBONE_SRCS)
FUZZ_LIBS_hbone_san := $(WOLFSSL_CFLAGS) $(HBONE_LDLIBS)
# Deferred (=): CERTS_SRCS comes from certs/module.mk, read after this file.
FUZZ_SRCS_hbone_tls = tests/fuzz/fuzz_hbone_tls.c $(HBONE_SRCS) $(CERTS_SRCS)
FUZZ_LIBS_hbone_tls := $(WOLFSSL_CFLAGS) $(HBONE_LDLIBS)

# The same engine with certs/ SVIDs issued in memory (certs/module.mk is
# included after this file, hence the literal library path).
CFLAGS_tests_unit_test_hbone_svid := $(WOLFSSL_CFLAGS)
UNIT_TESTS += $(O)/tests/test_hbone_svid
$(O)/tests/test_hbone_svid: $(call objs,tests/unit/test_hbone_svid.c) $(HBONE_LIB) \
		$(O)/lib/libambit-certs.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(HBONE_LDLIBS) -lcmocka

# Test-only HBONE endpoint over real sockets (interop and loopback numbers);
# lives beside the unit tests, not in bin/.  Not run by tests/run-all.sh as
# a unit test: only test_* are.
UNIT_TESTS += $(O)/tests/hbone-peer
$(O)/tests/hbone-peer: $(call objs,tests/unit/hbone_peer.c) $(HBONE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(HBONE_LDLIBS)
