# Authorization policy enforced in the data plane (authz.c): owns the
# confwatch instance and judges connections with policy_eval().
# dataplane.mk links $(AUTHZ_SRCS) $(POLICY_SRCS) into ambit-node-proxy.
AUTHZ_SRCS := node-proxy/authz.c

# authz.c against real policy files and real sockets; conn_abort() is the
# test's (it records which connections a policy change closes).
UNIT_TESTS += $(O)/tests/test_authz
$(O)/tests/test_authz: $(call objs,tests/unit/test_authz.c node-proxy/authz.c node-proxy/log.c) \
		$(POLICY_LIB) $(OBS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(POLICY_LDLIBS) -ljansson -luring -lcmocka
