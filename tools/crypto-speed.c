/*
 * crypto-speed: AES-128-GCM throughput of one libwolfssl shared object.
 *
 * The library is loaded with dlopen() and driven through its OpenSSL
 * compatibility EVP API, whose contexts are heap-allocated by the library
 * itself: that keeps this program independent of the struct layouts in a
 * given build's headers, so the same binary measures Debian's stock build
 * and ours side by side.
 *
 * usage: crypto-speed LIBRARY.so [LABEL]
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void *(*ctx_new_fn)(void);
typedef void (*ctx_free_fn)(void *);
typedef const void *(*cipher_fn)(void);
typedef int (*init_fn)(void *, const void *, void *, const unsigned char *, const unsigned char *);
typedef int (*update_fn)(void *, unsigned char *, int *, const unsigned char *, int);

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	enum { CHUNK = 16384 };
	static unsigned char in[CHUNK], out[CHUNK + 32];
	unsigned char key[16] = { 1 }, iv[12] = { 2 };
	const char *label;
	void *lib, *ctx;
	double t0, t, bytes = 0;
	int outl;

	if (argc < 2) {
		fprintf(stderr, "usage: %s LIBRARY.so [LABEL]\n", argv[0]);
		return 2;
	}
	label = argc > 2 ? argv[2] : argv[1];
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		printf("%-34s not available (%s)\n", label, dlerror());
		return 0;
	}
	ctx_new_fn ctx_new = (ctx_new_fn)dlsym(lib, "wolfSSL_EVP_CIPHER_CTX_new");
	ctx_free_fn ctx_free = (ctx_free_fn)dlsym(lib, "wolfSSL_EVP_CIPHER_CTX_free");
	cipher_fn gcm = (cipher_fn)dlsym(lib, "wolfSSL_EVP_aes_128_gcm");
	init_fn init = (init_fn)dlsym(lib, "wolfSSL_EVP_EncryptInit_ex");
	update_fn update = (update_fn)dlsym(lib, "wolfSSL_EVP_EncryptUpdate");
	if (!ctx_new || !ctx_free || !gcm || !init || !update) {
		printf("%-34s lacks the EVP AES-GCM API\n", label);
		return 1;
	}
	ctx = ctx_new();
	if (!ctx || init(ctx, gcm(), NULL, key, iv) != 1) {
		printf("%-34s AES-128-GCM init failed\n", label);
		return 1;
	}
	memset(in, 0xa5, sizeof(in));
	t0 = now();
	do {
		for (int i = 0; i < 64; i++) {
			if (update(ctx, out, &outl, in, CHUNK) != 1) {
				printf("%-34s AES-128-GCM encrypt failed\n", label);
				return 1;
			}
			bytes += CHUNK;
		}
		t = now() - t0;
	} while (t < 1.0);
	ctx_free(ctx);
	printf("%-34s AES-128-GCM %8.0f MB/s\n", label, bytes / t / 1e6);
	return 0;
}
