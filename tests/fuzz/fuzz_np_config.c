/*
 * libFuzzer harness for node-proxy's configuration parser: any bytes as an
 * INI file.  A file that loads must give values inside every documented
 * range; a file that is refused must leave the configuration untouched and
 * produce a "PATH:LINE: ..." or "PATH: ..." message.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "node-proxy/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct np_config c, before;
	char path[64], err[512] = "";
	int fd, rc;

	fd = memfd_create("np-config", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	config_defaults(&c);
	before = c;
	rc = config_load(&c, path, err, sizeof(err));
	if (rc == 0) {
		assert(c.workers <= 256);
		assert(c.port_outbound && c.port_inbound && c.port_hbone);
		assert(c.buf_count >= 8 && !(c.buf_count & (c.buf_count - 1)));
		assert(c.buf_size >= 1024 && c.buf_size <= (1u << 20));
		assert(c.queue_high >= 1 && c.queue_high <= 64);
		assert(c.connect_ms >= 1);
		assert(c.control_socket[0] == '/' &&
		       memchr(c.control_socket, 0, sizeof(c.control_socket)));
		assert(c.state_file[0] == '/' && memchr(c.state_file, 0, sizeof(c.state_file)));
	} else {
		assert(memcmp(&c, &before, sizeof(c)) == 0);
		assert(strncmp(err, path, strlen(path)) == 0);
	}
	close(fd);
	return 0;
}
