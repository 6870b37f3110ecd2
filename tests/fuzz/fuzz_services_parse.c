/*
 * libFuzzer harness for the services file parser (node-proxy/services.c):
 * any bytes as one services file.  A set that loads is looked up for a few
 * VIPs and ports and asked for endpoints among fixed workloads.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "node-proxy/confdir.h"
#include "node-proxy/services.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf_errors e;
	static struct workload wls[2] = {
		{ .uid = "a",
		  .ns = "shop",
		  .n_ips = 1,
		  .ips = { { .family = 2 } },
		  .n_labels = 1,
		  .labels = { { .key = "app", .val = "backend" } } },
		{ .uid = "b",
		  .ns = "shop",
		  .n_ips = 1,
		  .ips = { { .family = 2 } },
		  .n_labels = 2,
		  .labels = { { .key = "app", .val = "backend" },
		              { .key = SVC_WEIGHT_LABEL, .val = "3" } } },
	};
	static const struct workload *const wlp[2] = { &wls[0], &wls[1] };
	static const char *vips[] = { "10.96.0.10", "fd00:96::10", "1.2.3.4" };
	struct service_set *ss = NULL;

	conf_errors_init(&e);
	if (services_load_buf("fuzz.ini", (const char *)data, size, &ss, &e)) {
		assert(e.n > 0 && ss == NULL);
		return 0;
	}
	for (unsigned i = 0; i < services_count(ss); i++) {
		const struct service *s = services_at(ss, i);
		struct svc_ticket t;
		struct svc_pick p;

		assert(s->n_vips > 0 && s->n_ports > 0 && s->sel);
		if (services_acquire(s, &t) == 0) {
			if (services_pick(s, wlp, 2, NULL, 1, &p) == 0) {
				services_report(p.ep, false, 1);
				services_done(p.ep);
			}
			services_release(&t);
		}
	}
	for (unsigned i = 0; i < 3; i++) {
		struct wl_ip ip;
		uint16_t target;
		conf_parse_ip(vips[i], &ip);
		services_lookup(ss, &ip, 80, &target);
	}
	services_set_put(ss);
	return 0;
}
