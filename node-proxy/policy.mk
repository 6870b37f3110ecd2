# node-proxy authorization policy, services, config reload and check-config
# (issue 6).  Pure modules: no io_uring, no TLS; the data plane links
# $(POLICY_SRCS) into ambit-node-proxy and calls policy_eval() and friends.

POLICY_SRCS   := node-proxy/confdir.c node-proxy/policy.c node-proxy/services.c \
                 node-proxy/healthcheck.c node-proxy/confwatch.c node-proxy/checkconfig.c
POLICY_LDLIBS := -linih -lpthread
POLICY_LIB    := $(O)/lib/libambit-policy.a

$(POLICY_LIB): $(call objs,$(POLICY_SRCS))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

UNIT_TESTS += $(O)/tests/test_policy $(O)/tests/test_policy_parse $(O)/tests/test_services \
              $(O)/tests/test_policy_reload $(O)/tests/test_services_health

# confwatch logs through the data plane's node-proxy/log.c
$(O)/tests/test_policy: $(call objs,tests/unit/test_policy.c node-proxy/log.c) $(POLICY_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -lcmocka

$(O)/tests/test_policy_parse: $(call objs,tests/unit/test_policy_parse.c node-proxy/log.c) \
		$(POLICY_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -lcmocka

$(O)/tests/test_services: $(call objs,tests/unit/test_services.c node-proxy/log.c) $(POLICY_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -lcmocka

$(O)/tests/test_policy_reload: $(call objs,tests/unit/test_policy_reload.c node-proxy/log.c) \
		$(POLICY_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -lcmocka

$(O)/tests/test_services_health: $(call objs,tests/unit/test_services_health.c) $(POLICY_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -lcmocka

FUZZERS += policy_parse policy_eval services_parse
FUZZ_SRCS_policy_parse := tests/fuzz/fuzz_policy_parse.c node-proxy/confdir.c node-proxy/policy.c
FUZZ_LIBS_policy_parse := -linih
FUZZ_SRCS_policy_eval := tests/fuzz/fuzz_policy_eval.c node-proxy/confdir.c node-proxy/policy.c
FUZZ_LIBS_policy_eval := -linih
FUZZ_SRCS_services_parse := tests/fuzz/fuzz_services_parse.c node-proxy/confdir.c \
                            node-proxy/services.c
FUZZ_LIBS_services_parse := -linih -lpthread
