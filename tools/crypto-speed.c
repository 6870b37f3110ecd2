/*
 * crypto-speed: AES-128-GCM throughput of one libwolfssl shared object.
 *
 * The library is loaded with dlopen() and driven through wolfCrypt's
 * wc_AesGcm* functions.  The Aes context is a generously sized, 64-byte
 * aligned buffer rather than a struct from some build's headers, so the
 * same binary measures Debian's stock build and ours side by side even
 * though their struct layouts differ (AES-NI adds fields).
 *
 * usage: crypto-speed LIBRARY.so [LABEL]
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*aes_init_fn)(void *aes, void *heap, int devid);
typedef void (*aes_free_fn)(void *aes);
typedef int (*gcm_setkey_fn)(void *aes, const unsigned char *key, unsigned len);
typedef int (*gcm_encrypt_fn)(void *aes, unsigned char *out, const unsigned char *in, unsigned sz,
                              const unsigned char *iv, unsigned ivsz, unsigned char *tag,
                              unsigned tagsz, const unsigned char *aad, unsigned aadsz);

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	enum { CHUNK = 16384, AES_CTX_BYTES = 1 << 16 };
	static unsigned char in[CHUNK], out[CHUNK];
	unsigned char key[16] = { 1 }, iv[12] = { 2 }, tag[16];
	const char *label;
	double t0, t, bytes = 0;
	void *lib, *aes;

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
	aes_init_fn aes_init = (aes_init_fn)dlsym(lib, "wc_AesInit");
	aes_free_fn aes_free = (aes_free_fn)dlsym(lib, "wc_AesFree");
	gcm_setkey_fn setkey = (gcm_setkey_fn)dlsym(lib, "wc_AesGcmSetKey");
	gcm_encrypt_fn encrypt = (gcm_encrypt_fn)dlsym(lib, "wc_AesGcmEncrypt");
	if (!aes_init || !aes_free || !setkey || !encrypt) {
		printf("%-34s lacks the wc_AesGcm API\n", label);
		return 1;
	}
	aes = aligned_alloc(64, AES_CTX_BYTES);
	if (!aes)
		return 1;
	memset(aes, 0, AES_CTX_BYTES);
	if (aes_init(aes, NULL, -2 /* INVALID_DEVID */) != 0 || setkey(aes, key, 16) != 0) {
		printf("%-34s AES-128-GCM init failed\n", label);
		return 1;
	}
	memset(in, 0xa5, sizeof(in));
	t0 = now();
	do {
		for (int i = 0; i < 64; i++) {
			if (encrypt(aes, out, in, CHUNK, iv, sizeof(iv), tag, sizeof(tag), NULL,
			            0) != 0) {
				printf("%-34s AES-128-GCM encrypt failed\n", label);
				return 1;
			}
			bytes += CHUNK;
		}
		t = now() - t0;
	} while (t < 1.0);
	aes_free(aes);
	free(aes);
	printf("%-34s AES-128-GCM %8.0f MB/s\n", label, bytes / t / 1e6);
	return 0;
}
