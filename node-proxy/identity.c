/* identity: see identity.h. */
#include <wolfssl/options.h>

#include "node-proxy/identity.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "certs/ca.h"
#include "certs/fileio.h"
#include "certs/svid.h"
#include "certs/x509.h"
#include "node-proxy/log.h"
#include "node-proxy/tls.h"

#define CERT_FILE_MAX (64 * 1024)
#define RETRY_S       10 /* a failed renewal is retried this often */

/* One service account's SVID.  Everything but @slot is protected by the
 * cache mutex; @slot is itself thread safe. */
struct sa_entry {
	struct sa_entry *next;
	char ns[SPIFFE_SEG_MAX + 1], sa[SPIFFE_SEG_MAX + 1];
	char id[SPIFFE_ID_MAX + 1];
	struct tls_identity_slot *slot;
	unsigned pods;
	/* the current certificate, for the admin dump */
	char serial[2 * 32 + 1];
	char sha256[65];
	int64_t not_before, not_after, renew_at;
	uint64_t generation;
	int64_t retry_at; /* after a failed renewal */
};

/* uid -> entry, so a delete knows which account to release. */
struct pod_ref {
	struct pod_ref *next;
	char uid[64];
	struct sa_entry *e;
};

struct identity_cache {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	int stop, renew_all, thread_started;
	struct ca *node;
	uint8_t *roots;
	size_t roots_len;
	char td[SPIFFE_TD_MAX + 1];
	unsigned lifetime_s;
	struct sa_entry *entries;
	struct pod_ref *pods;
	uint64_t issued, failed;
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* Issue a fresh SVID for @e and build its tls_identity.  Called with the
 * mutex held (a P-256 key and a signature: ~1 ms).  Fills the metadata of
 * @e; *@out gets the identity (refcount 1). */
static int issue(struct identity_cache *ic, struct sa_entry *e, struct tls_identity **out,
                 char *err, size_t errlen)
{
	struct tls_identity_config tc = { 0 };
	struct spiffe_id sid = { 0 };
	struct x509_cert *xc = NULL;
	struct certs_err ce = { { 0 } };
	struct svid *s = NULL;
	uint8_t digest[WC_SHA256_DIGEST_SIZE];
	int64_t t = now_s();
	int rc;

	snprintf(sid.td, sizeof(sid.td), "%s", ic->td);
	snprintf(sid.ns, sizeof(sid.ns), "%s", e->ns);
	snprintf(sid.sa, sizeof(sid.sa), "%s", e->sa);
	rc = svid_issue(ic->node, &sid, ic->lifetime_s, 0, &s, &ce);
	if (rc) {
		snprintf(err, errlen, "issue %s: %s", e->id, ce.msg);
		goto out;
	}
	tc.chain = s->chain_der;
	tc.chain_len = s->chain_der_len;
	tc.key = s->key_der;
	tc.key_len = s->key_der_len;
	tc.roots = ic->roots;
	tc.roots_len = ic->roots_len;
	tc.trust_domain = ic->td;
	rc = tls_identity_new(&tc, out);
	if (rc) {
		snprintf(err, errlen, "identity %s: %s", e->id, strerror(-rc));
		goto out;
	}
	xc = calloc(1, sizeof(*xc));
	if (xc && x509_parse(s->cert_der, s->cert_der_len, xc, NULL) == 0)
		snprintf(e->serial, sizeof(e->serial), "%s", xc->serial_hex);
	else
		e->serial[0] = '\0';
	if (wc_Sha256Hash(s->cert_der, (word32)s->cert_der_len, digest) == 0)
		for (size_t i = 0; i < sizeof(digest); i++)
			snprintf(e->sha256 + 2 * i, 3, "%02x", digest[i]);
	e->not_before = s->not_before;
	e->not_after = s->not_after;
	/* Half of the remaining life from now, not svid's renew_at: notBefore
	 * is back-dated for clock skew, which would make a short lifetime
	 * (tests) due for renewal at once. */
	e->renew_at = t + (s->not_after - t) / 2;
	e->generation++;
	e->retry_at = 0;
	ic->issued++;
	rc = 0;
out:
	if (rc)
		ic->failed++;
	free(xc);
	svid_free(s); /* wipes the key: the identity holds its own copy */
	return rc;
}

static void *renew_main(void *arg)
{
	struct identity_cache *ic = arg;

	pthread_mutex_lock(&ic->mu);
	while (!ic->stop) {
		int64_t now = now_s(), next = now + 3600;
		int all = ic->renew_all;

		ic->renew_all = 0;
		for (struct sa_entry *e = ic->entries; e; e = e->next) {
			int64_t due = e->retry_at ? e->retry_at : e->renew_at;
			if (all || due <= now) {
				struct tls_identity *id = NULL;
				char err[320];
				if (issue(ic, e, &id, err, sizeof(err)) == 0) {
					tls_identity_slot_set(e->slot, id);
					log_info(
					    "event=svid_renewed id=%s serial=%s not_after=%lld",
					    e->id, e->serial, (long long)e->not_after);
				} else {
					e->retry_at = now + RETRY_S;
					log_err("event=svid_renew_failed id=%s err=\"%s\"", e->id,
					        err);
				}
				due = e->retry_at ? e->retry_at : e->renew_at;
			}
			if (due < next)
				next = due;
		}
		if (ic->renew_all)
			continue;
		struct timespec ts = { .tv_sec = (time_t)next };
		pthread_cond_timedwait(&ic->cv, &ic->mu, &ts);
	}
	pthread_mutex_unlock(&ic->mu);
	return NULL;
}

int identity_cache_new(const char *ca_dir, const char *td, unsigned lifetime_s,
                       struct identity_cache **out, char *err, size_t errlen)
{
	struct identity_cache *ic = calloc(1, sizeof(*ic));
	char cert[512], key[512], root[512];
	struct certs_err ce = { { 0 } };
	pthread_condattr_t ca;
	int rc;

	if (!ic)
		return -ENOMEM;
	pthread_mutex_init(&ic->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_REALTIME);
	pthread_cond_init(&ic->cv, &ca);
	pthread_condattr_destroy(&ca);
	ic->lifetime_s = lifetime_s;
	snprintf(ic->td, sizeof(ic->td), "%s", td);
	snprintf(cert, sizeof(cert), "%s/node-cert.pem", ca_dir);
	snprintf(key, sizeof(key), "%s/node-key.pem", ca_dir);
	snprintf(root, sizeof(root), "%s/root-cert.pem", ca_dir);
	rc = ca_load_files(cert, key, &ic->node, &ce);
	if (rc) {
		snprintf(err, errlen, "node CA from %s: %s", ca_dir, ce.msg);
		goto fail;
	}
	if (strcmp(ca_trust_domain(ic->node), td) != 0) {
		snprintf(err, errlen, "node CA %s is for trust domain \"%s\", not \"%s\"", cert,
		         ca_trust_domain(ic->node), td);
		rc = -EINVAL;
		goto fail;
	}
	rc = certs_read_file(root, CERT_FILE_MAX, &ic->roots, &ic->roots_len, &ce);
	if (rc) {
		snprintf(err, errlen, "%s: %s", root, ce.msg);
		goto fail;
	}
	rc = -pthread_create(&ic->thread, NULL, renew_main, ic);
	if (rc) {
		snprintf(err, errlen, "renewal thread: %s", strerror(-rc));
		goto fail;
	}
	ic->thread_started = 1;
	*out = ic;
	return 0;
fail:
	identity_cache_free(ic);
	return rc;
}

static void entry_free(struct sa_entry *e)
{
	tls_identity_slot_free(e->slot);
	free(e);
}

void identity_cache_free(struct identity_cache *ic)
{
	if (!ic)
		return;
	if (ic->thread_started) {
		pthread_mutex_lock(&ic->mu);
		ic->stop = 1;
		pthread_cond_signal(&ic->cv);
		pthread_mutex_unlock(&ic->mu);
		pthread_join(ic->thread, NULL);
	}
	while (ic->pods) {
		struct pod_ref *p = ic->pods;
		ic->pods = p->next;
		free(p);
	}
	while (ic->entries) {
		struct sa_entry *e = ic->entries;
		ic->entries = e->next;
		entry_free(e);
	}
	ca_free(ic->node);
	if (ic->roots)
		certs_file_free(ic->roots, ic->roots_len);
	pthread_cond_destroy(&ic->cv);
	pthread_mutex_destroy(&ic->mu);
	free(ic);
}

static struct sa_entry *find_entry(struct identity_cache *ic, const char *ns, const char *sa)
{
	for (struct sa_entry *e = ic->entries; e; e = e->next)
		if (!strcmp(e->ns, ns) && !strcmp(e->sa, sa))
			return e;
	return NULL;
}

static void release_entry(struct identity_cache *ic, struct sa_entry *e)
{
	if (--e->pods)
		return;
	for (struct sa_entry **pp = &ic->entries; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	log_info("event=svid_dropped id=%s", e->id);
	entry_free(e);
}

int identity_spiffe_id(const struct identity_cache *ic, const char *ns, const char *sa, char *out,
                       size_t outlen)
{
	struct spiffe_id sid = { 0 };
	int n;

	if (strlen(ns) >= sizeof(sid.ns) || strlen(sa) >= sizeof(sid.sa))
		return -EINVAL;
	snprintf(sid.td, sizeof(sid.td), "%s", ic->td);
	snprintf(sid.ns, sizeof(sid.ns), "%s", ns);
	snprintf(sid.sa, sizeof(sid.sa), "%s", sa);
	n = spiffe_id_format(&sid, out, outlen);
	return n < 0 ? n : 0;
}

const char *identity_trust_domain(const struct identity_cache *ic)
{
	return ic->td;
}

int identity_pod_add(struct identity_cache *ic, const char *uid, const char *ns, const char *sa,
                     char *err, size_t errlen)
{
	struct sa_entry *e, *fresh = NULL;
	struct pod_ref *p;
	int rc = 0;

	if (strlen(uid) >= sizeof(p->uid) || strlen(ns) >= sizeof(e->ns) ||
	    strlen(sa) >= sizeof(e->sa)) {
		snprintf(err, errlen, "uid, namespace or service account too long");
		return -EINVAL;
	}
	pthread_mutex_lock(&ic->mu);
	for (p = ic->pods; p; p = p->next)
		if (!strcmp(p->uid, uid))
			break;
	if (p && !strcmp(p->e->ns, ns) && !strcmp(p->e->sa, sa))
		goto out; /* re-add, same account */
	e = find_entry(ic, ns, sa);
	if (!e) {
		struct tls_identity *id = NULL;
		fresh = e = calloc(1, sizeof(*e));
		if (!e) {
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		snprintf(e->ns, sizeof(e->ns), "%s", ns);
		snprintf(e->sa, sizeof(e->sa), "%s", sa);
		rc = identity_spiffe_id(ic, ns, sa, e->id, sizeof(e->id));
		if (rc) {
			snprintf(err, errlen, "not a valid SPIFFE ID: ns \"%s\" sa \"%s\"", ns, sa);
			goto out;
		}
		rc = issue(ic, e, &id, err, errlen);
		if (rc)
			goto out;
		rc = tls_identity_slot_new(id, &e->slot);
		if (rc) {
			tls_identity_unref(id);
			snprintf(err, errlen, "identity slot: %s", strerror(-rc));
			goto out;
		}
		e->next = ic->entries;
		ic->entries = e;
		fresh = NULL;
		log_info("event=svid_issued id=%s serial=%s not_after=%lld", e->id, e->serial,
		         (long long)e->not_after);
		pthread_cond_signal(&ic->cv); /* the thread recomputes its next wake-up */
	}
	e->pods++;
	if (p) { /* moved to another account */
		release_entry(ic, p->e);
		p->e = e;
	} else {
		p = calloc(1, sizeof(*p));
		if (!p) {
			release_entry(ic, e);
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		snprintf(p->uid, sizeof(p->uid), "%s", uid);
		p->e = e;
		p->next = ic->pods;
		ic->pods = p;
	}
out:
	pthread_mutex_unlock(&ic->mu);
	free(fresh);
	return rc;
}

void identity_pod_del(struct identity_cache *ic, const char *uid)
{
	pthread_mutex_lock(&ic->mu);
	for (struct pod_ref **pp = &ic->pods; *pp; pp = &(*pp)->next) {
		struct pod_ref *p = *pp;
		if (strcmp(p->uid, uid) != 0)
			continue;
		*pp = p->next;
		release_entry(ic, p->e);
		free(p);
		break;
	}
	pthread_mutex_unlock(&ic->mu);
}

struct tls_identity *identity_get(struct identity_cache *ic, const char *ns, const char *sa)
{
	struct tls_identity *id = NULL;
	struct sa_entry *e;

	pthread_mutex_lock(&ic->mu);
	e = find_entry(ic, ns, sa);
	if (e)
		id = tls_identity_slot_get(e->slot);
	pthread_mutex_unlock(&ic->mu);
	return id;
}

void identity_renew_now(struct identity_cache *ic)
{
	pthread_mutex_lock(&ic->mu);
	ic->renew_all = 1;
	pthread_cond_signal(&ic->cv);
	pthread_mutex_unlock(&ic->mu);
}

json_t *identity_json(struct identity_cache *ic)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&ic->mu);
	for (struct sa_entry *e = ic->entries; e; e = e->next)
		json_array_append_new(
		    arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:i}", "id", e->id,
		                   "serial", e->serial, "not_before", (json_int_t)e->not_before,
		                   "not_after", (json_int_t)e->not_after, "renew_at",
		                   (json_int_t)e->renew_at, "generation", (json_int_t)e->generation,
		                   "sha256", e->sha256, "pods", (int)e->pods));
	pthread_mutex_unlock(&ic->mu);
	return arr;
}

void identity_counters(struct identity_cache *ic, uint64_t *issued, uint64_t *failed)
{
	pthread_mutex_lock(&ic->mu);
	*issued = ic->issued;
	*failed = ic->failed;
	pthread_mutex_unlock(&ic->mu);
}
