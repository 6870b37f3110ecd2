/*
 * metrics_dump: drive the metrics module from a script and print the
 * exposition text, for tests/system/test_metrics_format.py.  Not a cmocka
 * test (built as $(O)/tests/metrics_dump).
 *
 * stdin, one command per line, fields separated by TAB; in label values
 * "\xHH" stands for any byte and "\t" "\n" "\\" for themselves:
 *   init <workers> <max_series>
 *   series <name> <source|destination> <mutual_tls|none|unknown> [label=value]...
 *   open <worker> <name>
 *   close <worker> <name> <rflags (decimal bitmask)>
 *   bytes <worker> <name> <sent> <received>
 *   family <name> <counter|gauge> <help> [label names]...
 *   inc <worker|any> <family> <n> [label values]...
 *   set <family> <v> [label values]...
 *   std                     register the access log's families too
 *   build <version>
 *   render
 *   bench <iterations>      time the hot-path calls, report ns/op on stdout
 * Each command that fails prints "ERR <line>" on stderr and exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node-proxy/accesslog.h"
#include "node-proxy/metrics.h"

#define MAX_NAMED  64
#define MAX_FIELDS 32

static struct {
	char name[64];
	uint32_t id;
} named[MAX_NAMED];
static int n_named;
static struct {
	char name[128];
	struct metrics_family *f;
} fams[MAX_NAMED];
static int n_fams;

static void unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (s[0] == '\\' && s[1] == 'x' && s[2] && s[3]) {
			char hex[3] = { s[2], s[3], 0 };

			*o++ = (char)strtoul(hex, NULL, 16);
			s += 4;
		} else if (s[0] == '\\' && s[1] == 't') {
			*o++ = '\t';
			s += 2;
		} else if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s += 2;
		} else if (s[0] == '\\' && s[1] == '\\') {
			*o++ = '\\';
			s += 2;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
}

static int split(char *line, char **f)
{
	int n = 0;
	char *save, *tok;

	for (tok = strtok_r(line, "\t", &save); tok && n < MAX_FIELDS;
	     tok = strtok_r(NULL, "\t", &save)) {
		unescape(tok);
		f[n++] = tok;
	}
	return n;
}

static uint32_t find_series(const char *name)
{
	int i;

	for (i = 0; i < n_named; i++)
		if (!strcmp(named[i].name, name))
			return named[i].id;
	fprintf(stderr, "unknown series %s\n", name);
	exit(1);
}

static struct metrics_family *find_fam(const char *name)
{
	int i;

	for (i = 0; i < n_fams; i++)
		if (!strcmp(fams[i].name, name))
			return fams[i].f;
	fprintf(stderr, "unknown family %s\n", name);
	exit(1);
}

static int do_series(char **f, int n)
{
	struct metrics_labels l;
	int i, k;

	if (n < 4 || n_named == MAX_NAMED)
		return -1;
	memset(&l, 0, sizeof(l));
	l.reporter =
	    !strcmp(f[2], "destination") ? METRICS_REPORTER_DESTINATION : METRICS_REPORTER_SOURCE;
	l.security = !strcmp(f[3], "mutual_tls") ? METRICS_SEC_MUTUAL_TLS
	             : !strcmp(f[3], "none")     ? METRICS_SEC_NONE
	                                         : METRICS_SEC_UNKNOWN;
	for (i = 4; i < n; i++) {
		char *eq = strchr(f[i], '=');

		if (!eq)
			return -1;
		*eq = '\0';
		for (k = 0; k < ML__COUNT; k++)
			if (!strcmp(metrics_label_name(k), f[i]))
				break;
		if (k == ML__COUNT)
			return -1;
		l.v[k] = eq + 1;
	}
	snprintf(named[n_named].name, sizeof(named[n_named].name), "%s", f[1]);
	named[n_named++].id = metrics_series(&l);
	return 0;
}

static struct metrics_shard *shard(const char *w)
{
	struct metrics_shard *s = metrics_shard((unsigned)atoi(w));

	if (!s) {
		fprintf(stderr, "no shard %s\n", w);
		exit(1);
	}
	return s;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Hot-path costs on this machine: per-packet byte add, per-connection
 * interning of a known label set, open+close, an access log record, and a
 * scrape of a full series table. */
static int bench(unsigned long iters)
{
	struct metrics_shard *s = metrics_shard(0);
	struct metrics_labels l;
	struct al_record *r;
	char name[32], *out;
	unsigned long i;
	uint32_t id = 0;
	size_t len;
	double t;
	int rc;

	if (!s)
		return -1;
	memset(&l, 0, sizeof(l));
	l.security = METRICS_SEC_MUTUAL_TLS;
	l.v[ML_SOURCE_WORKLOAD] = "frontend";
	l.v[ML_SOURCE_WORKLOAD_NAMESPACE] = "shop";
	l.v[ML_SOURCE_PRINCIPAL] = "spiffe://cluster.local/ns/shop/sa/frontend";
	l.v[ML_DESTINATION_WORKLOAD] = "backend";
	l.v[ML_DESTINATION_WORKLOAD_NAMESPACE] = "shop";
	l.v[ML_DESTINATION_PRINCIPAL] = "spiffe://cluster.local/ns/shop/sa/backend";
	l.v[ML_DESTINATION_SERVICE] = "backend.shop.svc.cluster.local";
	id = metrics_series(&l);

	t = now_ns();
	for (i = 0; i < iters; i++)
		metrics_tcp_add(s, id, MT_SENT_BYTES, i & 1023);
	printf("metrics_tcp_add_ns %.2f\n", (now_ns() - t) / (double)iters);

	t = now_ns();
	for (i = 0; i < iters / 100; i++)
		id = metrics_series(&l);
	printf("metrics_series_known_ns %.1f\n", (now_ns() - t) / (double)(iters / 100));

	t = now_ns();
	for (i = 0; i < iters / 100; i++) {
		metrics_conn_open(s, id);
		metrics_conn_close(s, id, 0);
	}
	printf("metrics_open_close_ns %.1f\n", (now_ns() - t) / (double)(iters / 100));

	t = now_ns();
	for (i = 0; i < iters / 100; i++)
		metrics_conn_close(s, id, RF_UF);
	printf("metrics_close_with_flags_ns %.1f\n", (now_ns() - t) / (double)(iters / 100));

	rc = accesslog_init(1, 4096, "/dev/null");
	if (rc)
		return rc;
	t = now_ns();
	for (i = 0; i < iters / 100; i++) {
		r = accesslog_reserve(0, 0);
		if (!r)
			continue;
		r->req_bytes = i;
		al_str(r->src.workload, sizeof(r->src.workload), "frontend");
		al_str(r->dst.workload, sizeof(r->dst.workload), "backend");
		al_str(r->src.identity, sizeof(r->src.identity), l.v[ML_SOURCE_PRINCIPAL]);
		accesslog_commit(0);
	}
	printf("accesslog_record_ns %.1f\n", (now_ns() - t) / (double)(iters / 100));
	accesslog_flush(5000);
	/* writer throughput: fill the ring, wait for it to drain, repeat */
	t = now_ns();
	for (i = 0; i < 50 * 4096; i++) {
		r = accesslog_reserve(0, 0);
		if (!r) {
			accesslog_flush(5000);
			continue;
		}
		al_str(r->src.workload, sizeof(r->src.workload), "frontend");
		al_str(r->src.identity, sizeof(r->src.identity), l.v[ML_SOURCE_PRINCIPAL]);
		al_str(r->dst.identity, sizeof(r->dst.identity), l.v[ML_DESTINATION_PRINCIPAL]);
		accesslog_commit(0);
	}
	accesslog_flush(5000);
	printf("accesslog_writer_lines_per_s %.0f\n", 50 * 4096 / ((now_ns() - t) / 1e9));
	{
		struct accesslog_stats st;

		accesslog_stats_get(&st);
		printf("accesslog_written %llu dropped %llu\n", (unsigned long long)st.written,
		       (unsigned long long)st.dropped);
	}
	accesslog_fini();

	for (i = 0; metrics_series_count() < 4096 && i < 100000; i++) {
		snprintf(name, sizeof(name), "w%lu", i);
		l.v[ML_SOURCE_WORKLOAD] = name;
		metrics_conn_open(s, metrics_series(&l));
	}
	t = now_ns();
	rc = metrics_render(&out, &len);
	if (rc)
		return rc;
	printf("render_series %u bytes %zu ms %.1f\n", metrics_series_count(), len,
	       (now_ns() - t) / 1e6);
	free(out);
	return 0;
}

static int run(char **f, int n)
{
	if (!strcmp(f[0], "bench") && n == 2)
		return bench(strtoul(f[1], NULL, 10));
	if (!strcmp(f[0], "init"))
		return n == 3 ? metrics_init((unsigned)atoi(f[1]), (uint32_t)atoi(f[2])) : -1;
	if (!strcmp(f[0], "series"))
		return do_series(f, n);
	if (!strcmp(f[0], "open") && n == 3) {
		metrics_conn_open(shard(f[1]), find_series(f[2]));
		return 0;
	}
	if (!strcmp(f[0], "close") && n == 4) {
		metrics_conn_close(shard(f[1]), find_series(f[2]),
		                   (uint32_t)strtoul(f[3], NULL, 10));
		return 0;
	}
	if (!strcmp(f[0], "bytes") && n == 5) {
		metrics_tcp_add(shard(f[1]), find_series(f[2]), MT_SENT_BYTES,
		                strtoull(f[3], NULL, 10));
		metrics_tcp_add(shard(f[1]), find_series(f[2]), MT_RECEIVED_BYTES,
		                strtoull(f[4], NULL, 10));
		return 0;
	}
	if (!strcmp(f[0], "family") && n >= 4 && n_fams < MAX_NAMED) {
		const char *ln[MAX_FIELDS];
		int i;

		for (i = 4; i < n; i++)
			ln[i - 4] = f[i];
		ln[n - 4] = NULL;
		fams[n_fams].f = metrics_family_register(
		    f[1], f[3], !strcmp(f[2], "gauge") ? METRICS_GAUGE : METRICS_COUNTER, ln);
		if (!fams[n_fams].f)
			return -errno;
		snprintf(fams[n_fams].name, sizeof(fams[n_fams].name), "%s", f[1]);
		n_fams++;
		return 0;
	}
	if (!strcmp(f[0], "inc") && n >= 4) {
		uint32_t slot = metrics_child(find_fam(f[2]), (const char *const *)&f[4]);

		if (!strcmp(f[1], "any"))
			metrics_ctr_add_any(slot, strtoll(f[3], NULL, 10));
		else
			metrics_ctr_add(shard(f[1]), slot, strtoll(f[3], NULL, 10));
		return 0;
	}
	if (!strcmp(f[0], "set") && n >= 3) {
		metrics_gauge_set(metrics_child(find_fam(f[1]), (const char *const *)&f[3]),
		                  strtoll(f[2], NULL, 10));
		return 0;
	}
	if (!strcmp(f[0], "std") && n == 1)
		return accesslog_register_metrics();
	if (!strcmp(f[0], "build") && n == 2) {
		metrics_set_build_info(f[1]);
		return 0;
	}
	if (!strcmp(f[0], "render") && n == 1)
		return metrics_render_file(stdout);
	return -1;
}

int main(void)
{
	char line[8192], *f[MAX_FIELDS];
	int n, rc, i;

	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		n = split(line, f);
		if (n == 0)
			continue;
		rc = run(f, n);
		if (rc) {
			fprintf(stderr, "ERR %s (%d)\n", f[0], rc);
			metrics_fini();
			return 1;
		}
		if (!strcmp(f[0], "init"))
			for (i = 0; i < MS__COUNT && n_fams < MAX_NAMED; i++) {
				/* expose the standard families to inc/set by name */
				fams[n_fams].f = metrics_std(i);
				snprintf(fams[n_fams].name, sizeof(fams[n_fams].name), "%s",
				         metrics_family_name(fams[n_fams].f));
				n_fams++;
			}
	}
	metrics_fini();
	return 0;
}
