# redirector: libambit-redirect.a (linked by the CNI plugin), the
# ambit-redirect CLI, its unit tests and the option-parser fuzzer.

REDIRECT_SRCS   := redirector/opts.c redirector/rules.c redirector/textbuf.c \
                   redirector/nft.c redirector/netns.c redirector/route.c \
                   redirector/redirect.c
REDIRECT_LIB    := $(O)/lib/libambit-redirect.a
REDIRECT_LDLIBS := -lnftables -lnl-route-3 -lnl-3

$(REDIRECT_LIB): $(call objs,$(REDIRECT_SRCS))
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

BINS += $(O)/bin/ambit-redirect
$(O)/bin/ambit-redirect: $(call objs,redirector/main.c) $(REDIRECT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(REDIRECT_LDLIBS)

UNIT_TESTS += $(O)/tests/test_redirect_rules $(O)/tests/test_redirect_opts \
              $(O)/tests/test_redirect_api
$(O)/tests/test_redirect_%: $(call objs,tests/unit/test_redirect_%.c) $(REDIRECT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(REDIRECT_LDLIBS) -lcmocka

FUZZERS += redirect_opts
FUZZ_SRCS_redirect_opts := tests/fuzz/fuzz_redirect_opts.c redirector/opts.c \
                           redirector/rules.c redirector/textbuf.c
FUZZ_LIBS_redirect_opts :=
