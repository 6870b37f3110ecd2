# HBONE in the data path: the routing decision, tunnels and streams on the
# io_uring workers (mesh.c), and per-service-account SVIDs (identity.c).
# dataplane.mk links $(MESH_SRCS) $(HBONE_SRCS) and $(CERTS_LIB) into
# ambit-node-proxy with $(MESH_LDLIBS).
MESH_SRCS   := node-proxy/mesh.c node-proxy/identity.c
MESH_LDLIBS  = $(HBONE_LDLIBS) $(CERTS_LDLIBS)
CFLAGS_node-proxy_identity := $(WOLFSSL_CFLAGS)
CFLAGS_node-proxy_mesh     := $(WOLFSSL_CFLAGS)

# identity.c against a real root and node intermediate (certs/), no network.
CFLAGS_tests_unit_test_identity := $(WOLFSSL_CFLAGS)
UNIT_TESTS += $(O)/tests/test_identity
$(O)/tests/test_identity: $(call objs,tests/unit/test_identity.c node-proxy/identity.c \
		node-proxy/log.c $(HBONE_SRCS)) $(O)/lib/libambit-certs.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(MESH_LDLIBS) -ljansson -lcmocka
