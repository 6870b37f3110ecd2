/*
 * config: node-proxy's daemon configuration (configs/node-proxy.ini).
 *
 * Parsed with inih.  Every key is known and range-checked; an unknown
 * section or key, or a bad value, is refused with "FILE:LINE: message".
 * Command-line flags are applied on top by main.c with config_set(), which
 * shares the same validation.
 */
#ifndef AMBIT_NP_CONFIG_H
#define AMBIT_NP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct np_config {
	/* [proxy] */
	unsigned workers;    /* 0 = one per online CPU */
	int log_level;       /* enum log_level */
	int preserve_source; /* inbound: connect to the app from the client's address */
	int cpu_affinity;    /* pin worker i to CPU i and steer flows by SO_INCOMING_CPU */
	int local_shortcut;  /* outbound to a pod on this node: one hop, not two */
	/* [ports] (in each pod netns, admin/readiness in the node netns) */
	uint16_t port_outbound; /* 15001 */
	uint16_t port_inbound;  /* 15006 */
	uint16_t port_hbone;    /* 15008 */
	uint16_t port_admin;    /* 15000, 127.0.0.1 */
	uint16_t port_ready;    /* 15021, 0.0.0.0 */
	/* [buffers] */
	unsigned buf_size;   /* bytes per provided receive buffer */
	unsigned buf_count;  /* buffers per worker, power of two */
	unsigned queue_high; /* buffers queued per direction before reads pause */
	int recv_multishot;  /* multishot recv (else one recv per buffer: strict bound) */
	/* [pool] */
	unsigned max_conns;    /* proxied connections per worker */
	unsigned backlog;      /* listen() backlog */
	unsigned ring_entries; /* io_uring SQ size per worker */
	/* [timeouts], milliseconds */
	unsigned connect_ms;
	unsigned idle_ms; /* 0 = never */
	unsigned drain_ms;
	/* [telemetry] (telemetry.c: metrics on :metrics_port, access log) */
	unsigned metrics_port;      /* 15020, 0.0.0.0; 0 = no metrics listener */
	unsigned max_series;        /* Istio label sets kept (then one overflow series) */
	char access_log[256];       /* JSON lines file; "" = stderr, starting off */
	unsigned access_log_sample; /* keep 1 in N connections; 0 = start off */
	/* [marks] */
	uint32_t proxy_mark;       /* SO_MARK on every proxy socket: 0x539 */
	uint32_t transparent_mark; /* SO_MARK with preserve_source: 0x111 */
	/* [paths] */
	char control_socket[108];
	char state_file[256];
	/* [mesh] (HBONE; off while ca_dir is empty) */
	char mesh_trust_domain[256];    /* "cluster.local" */
	char mesh_ca_dir[256];          /* node-cert.pem, node-key.pem, root-cert.pem */
	unsigned mesh_svid_lifetime_ms; /* 24h */
	int mesh_hbone;                 /* tunnel to mesh workloads (default on) */
	unsigned mesh_pool_streams;     /* streams per pooled HBONE connection */
	unsigned mesh_pool_idle_ms;     /* idle pooled connections close after this */
	unsigned mesh_stream_window;    /* HTTP/2 receive window per stream, bytes */
	int mesh_local_fast_path;       /* mesh pod -> mesh pod on this node: no tunnel */
	/* [policy] (authz.c; enforcement off while policies_dir is empty) */
	char policy_dir[256];    /* authorization policies (policies.d) */
	char services_dir[256];  /* services (services.d) */
	char policy_root_ns[64]; /* root namespace; "" = ambit-system */
};

/* Fill @c with the built-in defaults. */
void config_defaults(struct np_config *c);

/*
 * Load @path over @c.  Returns 0, or -EINVAL with "PATH:LINE: message"
 * (or -errno with "PATH: strerror" when the file cannot be read) in @err.
 */
int config_load(struct np_config *c, const char *path, char *err, size_t errlen);

/* Set one key ("section", "key", "value") with the file's validation.
 * Returns 0 or -EINVAL with a message (without location) in @err. */
int config_set(struct np_config *c, const char *section, const char *key, const char *value,
               char *err, size_t errlen);

/* Parse "250ms", "5s", "2m", "1h" or a bare number of milliseconds. */
int config_parse_duration_ms(const char *s, unsigned *out);

#endif
