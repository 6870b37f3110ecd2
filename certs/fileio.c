/* fileio: small-file I/O for the PKI; see fileio.h. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certs/fileio.h"

int certs_read_file(const char *path, size_t max, uint8_t **buf, size_t *len, struct certs_err *err)
{
	struct stat st;
	uint8_t *b = NULL;
	size_t got = 0;
	int fd, r;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return certs_errf(err, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = certs_errf(err, -errno, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = certs_errf(err, -EINVAL, "%s is not a regular file", path);
		goto out;
	}
	if ((size_t)st.st_size > max) {
		r = certs_errf(err, -EFBIG, "%s is larger than %zu bytes", path, max);
		goto out;
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		r = certs_errf(err, -ENOMEM, "out of memory reading %s", path);
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = certs_errf(err, -errno, "cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	b[got] = '\0';
	*buf = b;
	*len = got;
	b = NULL;
	r = 0;
out:
	if (b)
		certs_file_free(b, (size_t)st.st_size);
	close(fd);
	return r;
}

void certs_file_free(uint8_t *buf, size_t len)
{
	if (!buf)
		return;
	explicit_bzero(buf, len);
	free(buf);
}

int certs_write_file(const char *path, const void *buf, size_t len, mode_t mode,
                     struct certs_err *err)
{
	char tmp[4096], dirbuf[4096];
	const uint8_t *p = buf;
	int fd, dfd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp) ||
	    snprintf(dirbuf, sizeof(dirbuf), "%s", path) >= (int)sizeof(dirbuf))
		return certs_errf(err, -ENAMETOOLONG, "path too long: %s", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return certs_errf(err, -errno, "cannot create %s: %s", tmp, strerror(errno));
	/* The umask may have taken bits away; the mode is part of the contract. */
	if (fchmod(fd, mode) < 0) {
		r = certs_errf(err, -errno, "cannot chmod %s: %s", tmp, strerror(errno));
		goto fail;
	}
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = certs_errf(err, -errno, "cannot write %s: %s", tmp, strerror(errno));
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		r = certs_errf(err, -errno, "cannot fsync %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = certs_errf(err, -errno, "cannot close %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = certs_errf(err, -errno, "cannot rename %s to %s: %s", tmp, path,
		               strerror(errno));
		goto fail;
	}
	/* Make the rename itself durable. */
	dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}
