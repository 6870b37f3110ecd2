# cni-plugin: the chained CNI plugin and node installer (ambit-cni), its
# unit tests and the fuzzer of its input parsing.  The binary links the
# redirector library and node-proxy's control-protocol client; both are
# defined by module.mk files included before this one.

CNI_PARSE_SRCS := cni-plugin/cniconf.c
CNI_SRCS       := cni-plugin/main.c cni-plugin/plugin.c cni-plugin/state.c \
                  cni-plugin/install.c cni-plugin/cnilog.c $(CNI_PARSE_SRCS)

ifneq ($(REDIRECT_LIB),)
ifneq ($(CTLPROTO_LIB),)
BINS += $(O)/bin/ambit-cni
$(O)/bin/ambit-cni: $(call objs,$(CNI_SRCS)) $(REDIRECT_LIB) $(CTLPROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(REDIRECT_LDLIBS) -ljansson
endif
endif

UNIT_TESTS += $(O)/tests/test_cni_conf
$(O)/tests/test_cni_conf: $(call objs,tests/unit/test_cni_conf.c $(CNI_PARSE_SRCS))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -ljansson -lcmocka

UNIT_TESTS += $(O)/tests/test_cni_state
$(O)/tests/test_cni_state: $(call objs,tests/unit/test_cni_state.c cni-plugin/state.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -ljansson -lcmocka

FUZZERS += cni_conf
FUZZ_SRCS_cni_conf := tests/fuzz/fuzz_cni_conf.c $(CNI_PARSE_SRCS)
FUZZ_LIBS_cni_conf := -ljansson
