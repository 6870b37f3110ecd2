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
