# certs: the mesh PKI (root -> per-node intermediate -> per-pod SVID) on
# wolfSSL's certificate generation.  node-proxy links CERTS_LIB with
# CERTS_LDLIBS and compiles against certs/svid.h, certs/x509.h with
# CERTS_CFLAGS.

CERTS_SRCS   := certs/der.c certs/err.c certs/secmem.c certs/fileio.c certs/x509.c \
                certs/ca.c certs/svid.c
CERTS_LIB    := $(O)/lib/libambit-certs.a
CERTS_CFLAGS := $(WOLFSSL_CFLAGS)
CERTS_LDLIBS := $(WOLFSSL_LIBS)

CFLAGS_certs_err   := $(WOLFSSL_CFLAGS)
CFLAGS_certs_x509  := $(WOLFSSL_CFLAGS)
CFLAGS_certs_ca    := $(WOLFSSL_CFLAGS)
CFLAGS_certs_svid  := $(WOLFSSL_CFLAGS)
CFLAGS_certs_main  := $(WOLFSSL_CFLAGS)
CFLAGS_tests_unit_test_certs := $(WOLFSSL_CFLAGS)

$(CERTS_LIB): $(call objs,$(CERTS_SRCS))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

BINS += $(O)/bin/ambit-certs
$(O)/bin/ambit-certs: $(call objs,certs/main.c) $(CERTS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CERTS_LDLIBS)

UNIT_TESTS += $(O)/tests/test_certs
$(O)/tests/test_certs: $(call objs,tests/unit/test_certs.c) $(CERTS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CERTS_LDLIBS) -lcmocka

# libFuzzer: the certificate parser, PEM splitter and SPIFFE ID parser.
# The fuzz build only passes -I$(ROOT), so wolfSSL's include path rides on
# the library line (clang accepts -I anywhere).
FUZZERS += x509
FUZZ_SRCS_x509 := tests/fuzz/fuzz_x509.c certs/der.c certs/err.c certs/x509.c
FUZZ_LIBS_x509 := $(WOLFSSL_CFLAGS) $(WOLFSSL_LIBS)
