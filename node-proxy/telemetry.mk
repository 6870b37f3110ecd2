# node-proxy telemetry glue: the data plane's hooks into the metrics
# registry and the access log (obs.mk), the :15020/metrics and /logging
# handlers, and the collectors for counters kept elsewhere.  Linked into
# $(O)/bin/ambit-node-proxy by dataplane.mk with $(OBS_SRCS).

TELEMETRY_SRCS := node-proxy/telemetry.c
