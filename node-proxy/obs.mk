# node-proxy observability: Istio-compatible metrics registry and Prometheus
# text exposition (metrics, promtext) and the non-blocking JSON access log
# (accesslog).  No I/O of their own besides the access log's writer thread:
# the data plane calls them (see docs/observability.md) and the admin server
# serves metrics_render() on :15020/metrics.

OBS_SRCS   := node-proxy/promtext.c node-proxy/metrics.c node-proxy/accesslog.c
OBS_LIB    := $(O)/lib/libambit-obs.a
OBS_LDLIBS :=

$(OBS_LIB): $(call objs,$(OBS_SRCS))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

UNIT_TESTS += $(O)/tests/test_metrics $(O)/tests/test_accesslog

$(O)/tests/test_metrics: $(call objs,tests/unit/test_metrics.c) $(OBS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(OBS_LDLIBS) -lcmocka

$(O)/tests/test_accesslog: $(call objs,tests/unit/test_accesslog.c) $(OBS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(OBS_LDLIBS) -ljansson -lcmocka

# Driver for tests/system/test_metrics_format.py: reads a script on stdin,
# prints the exposition text.  Built by `make unit`; not a test itself
# (run-all.sh runs only tests/test_*).
UNIT_TESTS += $(O)/tests/metrics_dump
$(O)/tests/metrics_dump: $(call objs,tests/unit/test_metrics_dump.c) $(OBS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(OBS_LDLIBS)

FUZZERS += accesslog_json
FUZZ_SRCS_accesslog_json := tests/fuzz/fuzz_accesslog_json.c $(OBS_SRCS)
FUZZ_LIBS_accesslog_json := -ljansson
