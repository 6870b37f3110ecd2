# node-proxy data plane: io_uring workers, relay, in-pod listeners, admin,
# config, and the ambit-node-proxy binary (with the control plane's
# $(CONTROL_SRCS) from control.mk).

DATAPLANE_SRCS := node-proxy/log.c node-proxy/config.c node-proxy/conn.c \
                  node-proxy/worker.c node-proxy/inpod.c node-proxy/admin.c
DATAPLANE_LDLIBS := -luring -linih -ljansson -lpthread

BINS += $(O)/bin/ambit-node-proxy
$(O)/bin/ambit-node-proxy: $(call objs,node-proxy/main.c $(DATAPLANE_SRCS) $(CONTROL_SRCS) \
		$(MESH_SRCS) $(HBONE_SRCS) $(AUTHZ_SRCS) $(POLICY_SRCS)) $(O)/lib/libambit-certs.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(DATAPLANE_LDLIBS) $(MESH_LDLIBS)
# metrics, access log and their glue (telemetry.mk, obs.mk)
$(O)/bin/ambit-node-proxy: $(call objs,$(TELEMETRY_SRCS) $(OBS_SRCS))

UNIT_TESTS += $(O)/tests/test_config $(O)/tests/test_np_conn
$(O)/tests/test_config: $(call objs,tests/unit/test_config.c node-proxy/config.c node-proxy/log.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -linih -lcmocka

$(O)/tests/test_np_conn: $(call objs,tests/unit/test_np_conn.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -luring -lcmocka

FUZZERS += np_config
FUZZ_SRCS_np_config := tests/fuzz/fuzz_np_config.c node-proxy/config.c node-proxy/log.c
FUZZ_LIBS_np_config := -linih
