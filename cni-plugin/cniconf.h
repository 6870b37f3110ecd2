/*
 * cniconf: everything ambit-cni reads from its caller, parsed and bounded.
 *
 * Owns the parsing of the untrusted inputs of a CNI invocation: the
 * CNI_* environment, the CNI_ARGS string ("k=v;k=v"), the network
 * configuration on stdin (plugin keys, prevResult, GC's valid
 * attachments) and the AMBIT_LABELS list.  Nothing here touches the
 * system; the results are plain values that the command code in plugin.c
 * acts on.  Every failure carries the CNI error code the spec assigns to
 * it, so the caller only has to print it.  Fuzzed by tests/fuzz/fuzz_cni_conf.c.
 */
#ifndef AMBIT_CNICONF_H
#define AMBIT_CNICONF_H

#include <jansson.h>
#include <stddef.h>

#include "node-proxy/workload.h"
#include "redirector/redirect.h"

/* Well-known CNI error codes (spec section "Error") and ours (>= 100). */
enum cni_code {
	CNI_OK = 0,
	CNI_ERR_VERSION = 1,          /* incompatible CNI version */
	CNI_ERR_UNSUPPORTED = 2,      /* unsupported field in network config */
	CNI_ERR_NO_CONTAINER = 3,     /* container unknown or does not exist */
	CNI_ERR_ENV = 4,              /* invalid necessary environment variables */
	CNI_ERR_IO = 5,               /* I/O failure */
	CNI_ERR_DECODE = 6,           /* failed to decode content */
	CNI_ERR_CONFIG = 7,           /* invalid network config */
	CNI_ERR_TRY_AGAIN = 11,       /* try again later */
	CNI_ERR_NOT_AVAILABLE = 50,   /* STATUS: cannot service ADD */
	CNI_ERR_RULES = 100,          /* capture rules could not be installed */
	CNI_ERR_RULES_DRIFT = 101,    /* CHECK: capture rules differ */
	CNI_ERR_NOT_REGISTERED = 102, /* CHECK: node-proxy does not know the pod */
	CNI_ERR_STATE = 103,          /* attachment state could not be written */
};

struct cni_error {
	int code;
	char msg[256];
	char details[1024];
};

/* Fill @e (code + printf-style message); details start empty.  Returns -1
 * so that parsers can `return cni_fail(...)`. */
int cni_fail(struct cni_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set the details string of @e (printf-style). */
void cni_details(struct cni_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CNI_VERSION_DEFAULT "1.1.0"
#define CNI_ARGS_MAX        8192 /* longest CNI_ARGS accepted */
#define CNI_CONTAINERID_MAX 256
#define CNI_IFNAME_MAX      16 /* IFNAMSIZ */
#define CNI_PATH_MAX        4096
#define CNI_SOCK_MAX        108 /* sun_path */
#define CNI_MAX_NAMESPACES  64
#define CNI_STDIN_MAX       (4u << 20) /* GC's attachment list can be long */

enum cni_cmd {
	CNI_CMD_NONE,
	CNI_CMD_ADD,
	CNI_CMD_DEL,
	CNI_CMD_CHECK,
	CNI_CMD_VERSION,
	CNI_CMD_STATUS,
	CNI_CMD_GC,
};

/* The CNI_* environment, validated.  Strings point into the environment
 * (or are "" when unset) and are not owned. */
struct cni_env {
	enum cni_cmd cmd;
	const char *command;
	const char *container_id;
	const char *netns;
	const char *ifname;
	const char *args;
	const char *path;
};

/* Read and validate the environment through @get (getenv in the program,
 * a table in tests).  Which variables are required depends on the command:
 * ADD/DEL/CHECK need CNI_CONTAINERID and CNI_IFNAME (CNI_NETNS may be empty:
 * host-network pod on ADD, already gone on DEL).  Returns 0 or -1 with
 * code 4 in @e. */
int cni_env_read(struct cni_env *env, const char *(*get)(const char *name), struct cni_error *e);

/* CNI_ARGS, the keys ambit understands.  enroll: -1 unset, 0 no, 1 yes. */
struct cni_args {
	char pod_ns[WL_NAME_MAX];
	char pod_name[WL_NAME_MAX];
	char pod_uid[WL_UID_MAX];
	char sa[WL_NAME_MAX];
	int enroll;
	int has_labels;
	unsigned n_labels;
	struct wl_label labels[WL_MAX_LABELS];
};

/* Parse "k=v;k=v" (at most CNI_ARGS_MAX bytes).  Empty segments are
 * skipped, unknown keys ignored, the last duplicate wins; a segment
 * without '=' or an empty key, an over-long or ill-formed value of a known
 * key are errors (code 4).  Returns 0 or -1. */
int cni_args_parse(const char *s, struct cni_args *a, struct cni_error *e);

/* Parse "k:v,k:v" (or "k=v,k=v") labels into @labels (capacity WL_MAX_LABELS), merging
 * into the @*n already present (same key replaces).  Returns 0 or -1 with
 * the problem in @e using @code. */
int cni_labels_parse(const char *s, struct wl_label *labels, unsigned *n, int code,
                     struct cni_error *e);

/* The plugin's network configuration (stdin). */
struct cni_conf {
	json_t *root;     /* owned; freed by cni_conf_free */
	char version[16]; /* cniVersion of the request */
	const char *name; /* network name, borrowed from root ("" if absent) */
	char control_socket[CNI_SOCK_MAX];
	char state_dir[256];
	char log_file[256];
	int timeout_ms;
	unsigned n_exclude_ns;
	char exclude_ns[CNI_MAX_NAMESPACES][WL_NAME_MAX];
	int has_enroll_ns; /* the allow-list is present (possibly empty) */
	unsigned n_enroll_ns;
	char enroll_ns[CNI_MAX_NAMESPACES][WL_NAME_MAX];
	char sa[WL_NAME_MAX];
	unsigned n_labels;
	struct wl_label labels[WL_MAX_LABELS];
	/* AMBIT_* keys of "args": {"cni": {...}} (CNI conventions; what
	 * Multus fills from a pod's cni-args).  Below CNI_ARGS, above the
	 * static keys: see cni_args_merge. */
	struct cni_args conf_args;
	/* Only the exclude lists are filled; ports and marks stay zero. */
	struct redirect_opts redirect;
	json_t *prev_result; /* borrowed from root; NULL when absent */
	/* GC: containerIDs of cni.dev/valid-attachments, borrowed from root. */
	size_t n_valid;
	const char **valid_ids;
};

/* Parse @len bytes of stdin.  @cmd selects what is required: VERSION
 * needs nothing (an empty stdin is fine), the others need a JSON object
 * with a supported cniVersion and "type".  Errors: 6 (not JSON), 7
 * (wrong shape/type/bound), 1 (cniVersion not 1.0.0/1.1.0, or STATUS/GC
 * with 1.0.0).  On success @c owns a reference to the document; call
 * cni_conf_free in every case.  Returns 0 or -1. */
int cni_conf_parse(const char *buf, size_t len, enum cni_cmd cmd, struct cni_conf *c,
                   struct cni_error *e);
void cni_conf_free(struct cni_conf *c);

/* Pod IPs from c->prev_result: ips[].address (CIDR) whose "interface"
 * index names an entry of interfaces[] with "sandbox" set (an ip without
 * an interface index is taken as the pod's).  Up to WL_MAX_IPS are kept
 * (extra ones are counted in @*dropped).  Error 7 on a malformed
 * prevResult, or when it is missing or yields no IP.  Returns 0 or -1. */
int cni_prev_ips(const struct cni_conf *c, struct wl_ip *ips, unsigned *n, unsigned *dropped,
                 struct cni_error *e);

/* Complete @a (from CNI_ARGS) with @lower (the config's args.cni): the
 * service account and the enrollment switch when @a has none, labels
 * merged key by key with @a's winning.  Returns 0 or -1 (code 4: more
 * than WL_MAX_LABELS labels). */
int cni_args_merge(struct cni_args *a, const struct cni_args *lower, struct cni_error *e);

/* Whether a pod is enrolled, from config and CNI_ARGS alone (host-network
 * detection needs the system and lives in plugin.c).  In order:
 * AMBIT_ENROLL=false opts out; a namespace in excludeNamespaces is never
 * enrolled (not even with AMBIT_ENROLL=true: system namespaces stay out);
 * AMBIT_ENROLL=true opts in; with an enrollNamespaces allow-list only the
 * listed namespaces are enrolled; otherwise everything is.  Returns 1 or
 * 0 and points @why at a static explanation. */
int cni_enroll_decision(const struct cni_conf *c, const struct cni_args *a, const char **why);

/* The workload node-proxy is told about: uid = K8S_POD_UID, else the
 * container ID cut to WL_UID_MAX - 1 bytes; namespace = K8S_POD_NAMESPACE
 * or "default"; name = K8S_POD_NAME or the container ID; service account
 * = AMBIT_SERVICE_ACCOUNT, else the config's, else "default"; labels = the
 * config's overridden key by key by AMBIT_LABELS.  Returns 0 or -1 (code
 * 4: CNI_NETNS longer than the workload can record). */
int cni_workload_build(const struct cni_conf *c, const struct cni_args *a,
                       const struct cni_env *env, const struct wl_ip *ips, unsigned n_ips,
                       struct workload *w, struct cni_error *e);

/* 1 when @v is "1.0.0" or "1.1.0". */
int cni_version_supported(const char *v);

/* Characters allowed in a containerID by the spec: [A-Za-z0-9_.-], and
 * a first character that is alphanumeric. */
int cni_container_id_valid(const char *s);

#endif
