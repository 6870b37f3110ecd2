/*
 * workload: what node-proxy knows about one enrolled pod.
 *
 * A plain value type shared by the control protocol (ctlproto), the
 * registry and its persisted state, the CNI plugin and the data path.
 * All strings are NUL-terminated and bounded by the sizes below; the
 * control protocol rejects anything longer.
 */
#ifndef AMBIT_WORKLOAD_H
#define AMBIT_WORKLOAD_H

#include <netinet/in.h>
#include <stdint.h>

#define WL_UID_MAX    64   /* Kubernetes UID (36) or any opaque id */
#define WL_NAME_MAX   254  /* DNS-1123 subdomain: namespace, name, SA */
#define WL_MAX_IPS    4
#define WL_MAX_LABELS 32
#define WL_LABEL_KEY_MAX 318 /* prefix(253) + '/' + name(63) + NUL */
#define WL_LABEL_VAL_MAX 64

struct wl_ip {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	};
};

struct wl_label {
	char key[WL_LABEL_KEY_MAX];
	char val[WL_LABEL_VAL_MAX];
};

struct workload {
	char uid[WL_UID_MAX];
	char ns[WL_NAME_MAX];
	char name[WL_NAME_MAX];
	char sa[WL_NAME_MAX];      /* service account; "default" if unset */
	char netns_path[256];     /* informative: where the CNI saw the netns */
	unsigned n_ips;
	struct wl_ip ips[WL_MAX_IPS];
	unsigned n_labels;
	struct wl_label labels[WL_MAX_LABELS];
};

#endif
