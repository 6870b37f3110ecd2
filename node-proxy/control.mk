# node-proxy control plane: wire protocol (ctlproto), control server,
# workload registry and the `ambit-node-proxy ctl` client.  The binary itself
# is linked by dataplane.mk from $(CONTROL_SRCS).

CONTROL_SRCS   := node-proxy/ctlproto.c node-proxy/control.c node-proxy/registry.c \
                  node-proxy/ctl_client.c
CONTROL_LDLIBS := -ljansson

# Just the wire format and the blocking client, for the CNI plugin.
CTLPROTO_LIB := $(O)/lib/libambit-ctl.a
$(CTLPROTO_LIB): $(call objs,node-proxy/ctlproto.c)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

UNIT_TESTS += $(O)/tests/test_ctlproto $(O)/tests/test_registry $(O)/tests/test_control

$(O)/tests/test_ctlproto: $(call objs,tests/unit/test_ctlproto.c) $(CTLPROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CONTROL_LDLIBS) -lcmocka

# The server side logs through the data plane's node-proxy/log.c.
$(O)/tests/test_registry: $(call objs,tests/unit/test_registry.c node-proxy/registry.c \
		node-proxy/log.c) $(CTLPROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CONTROL_LDLIBS) -lcmocka

$(O)/tests/test_control: $(call objs,tests/unit/test_control.c node-proxy/control.c \
		node-proxy/registry.c node-proxy/ctl_client.c node-proxy/log.c) $(CTLPROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CONTROL_LDLIBS) -lcmocka

FUZZERS += ctlproto
# fuzz_ctlproto.c includes control.c itself (to reach its static handler).
FUZZ_SRCS_ctlproto := tests/fuzz/fuzz_ctlproto.c node-proxy/ctlproto.c node-proxy/registry.c \
                      node-proxy/log.c
FUZZ_LIBS_ctlproto := -ljansson
