/* Unit tests of node-proxy's pure connection logic: user_data packing and
 * the bounded connection pool (conn.c's pool functions are compiled in
 * directly; the relay itself is exercised by the system tests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node-proxy/conn.h"

/* conn.c references these from the worker; the pool tests never reach them. */
#include "node-proxy/pod.h"
#include "node-proxy/worker-t.h"
void pod_put(struct pod *p)
{
	(void)p;
}
struct io_uring_sqe *worker_sqe(struct worker *w)
{
	(void)w;
	return NULL;
}
void worker_buf_recycle(struct worker *w, uint16_t bid)
{
	(void)w;
	(void)bid;
}
int worker_enter_pod(struct worker *w, struct pod *pod)
{
	(void)w;
	(void)pod;
	return -1;
}
struct pod *inpod_lookup_addr(struct inpod *ip, const struct sockaddr *sa)
{
	(void)ip;
	(void)sa;
	return NULL;
}
void log_msg(int lvl, const char *fmt, ...)
{
	(void)lvl;
	(void)fmt;
}
int log_level_cur = 0;
/* mesh.c's hooks (HBONE off here) */
struct sockaddr_storage;
int mesh_accept_hbone(struct worker *w, struct pod *pod, int cfd)
{
	(void)w;
	(void)pod;
	(void)cfd;
	return -ENOTSUP;
}
struct svc_claim;
int mesh_outbound(struct worker *w, struct pod *pod, int cfd, const struct sockaddr_storage *dst,
                  struct svc_claim *cl)
{
	(void)w;
	(void)pod;
	(void)cfd;
	(void)dst;
	(void)cl;
	return -ENOENT;
}
/* authz.c's hook (no policy here: allow) */
int authz_plaintext(struct worker *w, struct pod *dst, int cfd, uint16_t dst_port)
{
	(void)w;
	(void)dst;
	(void)cfd;
	(void)dst_port;
	return 0;
}
int authz_service_claim(struct worker *w, struct svc_claim *cl, struct sockaddr_storage *dst)
{
	(void)w;
	(void)cl;
	(void)dst;
	return 0; /* not a VIP */
}
int authz_service_attach(struct worker *w, struct conn *c, struct svc_claim *cl)
{
	(void)w;
	(void)c;
	(void)cl;
	return 0;
}
void authz_claim_release(struct worker *w, struct svc_claim *cl)
{
	(void)w;
	(void)cl;
}
int authz_mesh_local(struct worker *w, struct pod *dst, struct pod *src, int cfd, uint16_t dst_port)
{
	(void)w;
	(void)dst;
	(void)src;
	(void)cfd;
	(void)dst_port;
	return 0;
}
int authz_service_retried(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
	return 0;
}
void authz_service_connected(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
}
int authz_service_retry(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
	return 0;
}
void authz_conn_closed(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
}
/* telemetry.c's hooks (metrics and access log are not under test here) */
void telemetry_conn_open(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
}
void telemetry_conn_bytes(struct worker *w, struct conn *c, unsigned s, uint64_t n)
{
	(void)w;
	(void)c;
	(void)s;
	(void)n;
}
void telemetry_conn_flag(struct worker *w, struct conn *c, uint32_t rflags, int err)
{
	(void)w;
	(void)c;
	(void)rflags;
	(void)err;
}
void telemetry_conn_close(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
}
void telemetry_refused(struct worker *w, struct pod *pod, struct pod *upod, int kind, int cfd,
                       const struct sockaddr_storage *dst, uint32_t rflags)
{
	(void)w;
	(void)pod;
	(void)upod;
	(void)kind;
	(void)cfd;
	(void)dst;
	(void)rflags;
}

#include "node-proxy/conn.c"

static void test_ud_roundtrip(void **state)
{
	(void)state;
	const enum op ops[] = { OP_ACCEPT,   OP_RECV,   OP_SEND, OP_CONNECT, OP_LINK_TIMEOUT,
		                OP_SHUTDOWN, OP_CANCEL, OP_TICK, OP_MAILBOX, OP_LCANCEL };
	const uint32_t idxs[] = { 0, 1, 65535, 65536, 0x7fffffff, UINT32_MAX };
	const uint16_t gens[] = { 0, 1, 0x8000, UINT16_MAX };
	for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
		for (unsigned s = 0; s < 2; s++)
			for (size_t i = 0; i < sizeof(idxs) / sizeof(idxs[0]); i++)
				for (size_t g = 0; g < sizeof(gens) / sizeof(gens[0]); g++) {
					uint64_t ud = ud_pack(ops[o], s, idxs[i], gens[g]);
					assert_int_equal(ud_op(ud), ops[o]);
					assert_int_equal(ud_side(ud), s);
					assert_int_equal(ud_idx(ud), idxs[i]);
					assert_int_equal(ud_gen(ud), gens[g]);
				}
	/* distinct sides of one conn never share a user_data (cancel by ud) */
	assert_true(ud_pack(OP_RECV, 0, 7, 1) != ud_pack(OP_RECV, 1, 7, 1));
	assert_true(ud_pack(OP_RECV, 0, 7, 1) != ud_pack(OP_RECV, 0, 7, 2));
}

static void test_pool_bounded(void **state)
{
	struct conn_pool p;
	struct conn *c[8];

	(void)state;
	assert_int_equal(conn_pool_init(&p, 8), 0);
	for (int i = 0; i < 8; i++) {
		c[i] = conn_pool_get(&p);
		assert_non_null(c[i]);
		assert_int_equal(c[i]->idx, i);
		assert_int_equal(c[i]->ep[0].fd, -1);
		assert_int_equal(c[i]->ep[1].fd, -1);
		assert_int_equal(c[i]->dir[0].head, BUF_NONE);
	}
	assert_null(conn_pool_get(&p)); /* bounded: the 9th is refused */
	assert_int_equal(p.n_active, 8);
	assert_int_equal(p.hwm, 8);

	/* free from the middle, the ends; the active list stays consistent */
	uint16_t gen3 = c[3]->gen;
	conn_pool_put(&p, c[3]);
	conn_pool_put(&p, c[0]);
	conn_pool_put(&p, c[7]);
	assert_int_equal(p.n_active, 5);
	unsigned n = 0;
	for (uint32_t i = p.active_head; i != CONN_NIL; i = p.slots[i].next) {
		assert_true(i != 0 && i != 3 && i != 7);
		if (p.slots[i].next != CONN_NIL)
			assert_int_equal(p.slots[p.slots[i].next].prev, i);
		n++;
	}
	assert_int_equal(n, 5);

	/* reuse is LIFO and bumps the generation */
	struct conn *r = conn_pool_get(&p);
	assert_int_equal(r->idx, 7);
	r = conn_pool_get(&p);
	assert_int_equal(r->idx, 0);
	r = conn_pool_get(&p);
	assert_int_equal(r->idx, 3);
	assert_int_equal(r->gen, (uint16_t)(gen3 + 1));
	assert_null(conn_pool_get(&p));
	assert_ptr_equal(conn_pool_at(&p, 3), r);
	assert_null(conn_pool_at(&p, 8));
	conn_pool_fini(&p);
}

static void test_pool_lazy(void **state)
{
	struct conn_pool p;

	(void)state;
	/* a large pool is only address space until used */
	assert_int_equal(conn_pool_init(&p, 1u << 20), 0);
	assert_int_equal(p.hwm, 0);
	struct conn *c = conn_pool_get(&p);
	assert_non_null(c);
	assert_int_equal(p.hwm, 1);
	conn_pool_put(&p, c);
	assert_int_equal(p.n_active, 0);
	assert_int_equal(p.active_head, CONN_NIL);
	conn_pool_fini(&p);
}

static void test_conn_size(void **state)
{
	(void)state;
	/* the per-idle-connection bound in docs/node-proxy.md relies on this */
	assert_true(sizeof(struct conn) <= 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ud_roundtrip),
		cmocka_unit_test(test_pool_bounded),
		cmocka_unit_test(test_pool_lazy),
		cmocka_unit_test(test_conn_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
