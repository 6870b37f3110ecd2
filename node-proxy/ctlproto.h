/*
 * ctlproto: the node-proxy control protocol, version 1 (wire format and a
 * small blocking client).  Shared by node-proxy's control server, the
 * `ambit-node-proxy ctl` client and the CNI plugin.
 *
 * Transport: a unix SOCK_SEQPACKET socket, root only.  One request per
 * datagram, one ack per request, in order.  A datagram is a fixed header
 * followed by a JSON object body of exactly hdr.len bytes:
 *
 *   u32 magic  "AMB1" (0x414d4231, network byte order)
 *   u16 version (1)          u16 type (enum ctl_type)
 *   u32 seq (echoed in ack)  u32 len (body bytes; header+len == datagram)
 *
 * ADD carries exactly one SCM_RIGHTS fd (the pod's netns); SNAPSHOT
 * carries one fd per workload in body order; no other type carries fds.
 * Ack = type|CTL_ACK, body {"error": "" on success or a message, ...}.
 * Full description: docs/control-protocol.md.
 */
#ifndef AMBIT_CTLPROTO_H
#define AMBIT_CTLPROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "node-proxy/workload.h"

#define CTL_MAGIC   0x414d4231u
#define CTL_VERSION 1
#define CTL_HDR_LEN 16
#define CTL_MAX_MSG 65536 /* whole datagram */
#define CTL_MAX_FDS 253   /* SCM_MAX_FD */
#define CTL_DEFAULT_SOCKET "/run/ambit/node-proxy.sock"

enum ctl_type {
	CTL_ADD = 1,      /* body {"workload": {...}}, fd = netns */
	CTL_DEL = 2,      /* body {"uid": "..."} ; unknown uid is success */
	CTL_SNAPSHOT = 3, /* body {"workloads": [...]}, one fd each; others deleted */
	CTL_LIST = 4,     /* ack body {"error":"", "workloads": [...]} */
	CTL_STATUS = 5,   /* ack body {"error":"", "ready": true|false} */
	CTL_ACK = 0x80,
};

struct ctl_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t seq;
	uint32_t len;
};

/* Workload <-> JSON object.  from_json validates every bound of workload.h
 * and writes the first problem to @err; returns 0 or -EINVAL. */
json_t *ctl_workload_to_json(const struct workload *w);
int ctl_workload_from_json(const json_t *j, struct workload *w, char *err, size_t errlen);

/* Parse one datagram (untrusted).  On success *body is a new reference the
 * caller owns.  Returns 0, -EPROTO (bad magic/length/JSON) or
 * -EPROTONOSUPPORT (version), with a message in @err. */
int ctl_parse(const void *buf, size_t len, struct ctl_hdr *h, json_t **body, char *err,
	      size_t errlen);
/* Encode into @buf; returns datagram length or -EMSGSIZE. */
int ctl_encode(uint16_t type, uint32_t seq, const json_t *body, void *buf, size_t cap);

/* Blocking client.  connect returns an fd or -errno. call sends one request
 * (with @fds attached), waits up to @timeout_ms (< 0: forever) for its
 * ack, and returns 0
 * when the ack's error string is empty, -EREMOTEIO with that string copied
 * into @err otherwise, or -errno on transport failure.  *reply (if not
 * NULL) receives the ack body, owned by the caller, whenever an ack
 * arrived (also an error ack); else it is set to NULL. */
int ctl_client_connect(const char *path);
int ctl_client_call(int fd, uint16_t type, json_t *body, const int *fds, size_t nfds,
		    int timeout_ms, json_t **reply, char *err, size_t errlen);

/* One-shot conveniences used by the CNI plugin. */
int ctl_add(const char *sock, const struct workload *w, int netns_fd, int timeout_ms, char *err,
	    size_t errlen);
int ctl_del(const char *sock, const char *uid, int timeout_ms, char *err, size_t errlen);
int ctl_status(const char *sock, int timeout_ms, int *ready, char *err, size_t errlen);

#endif
