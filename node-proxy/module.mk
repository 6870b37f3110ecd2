# node-proxy is assembled from three fragments, each owned by one area:
#   control.mk   - control protocol, control server, workload registry, ctl client
#   hbone.mk     - TLS + HTTP/2 CONNECT tunnel engine (sans-I/O)
#   policy.mk    - authorization policy, services, config reload, check-config
#   obs.mk       - metrics registry and exposition, access log
#   dataplane.mk - io_uring workers, listeners, relay, config, main; links
#                  $(O)/bin/ambit-node-proxy from $(CONTROL_SRCS) and friends
-include node-proxy/control.mk
-include node-proxy/hbone.mk
-include node-proxy/policy.mk
-include node-proxy/obs.mk
-include node-proxy/mesh.mk
-include node-proxy/authz.mk
-include node-proxy/telemetry.mk
-include node-proxy/dataplane.mk
