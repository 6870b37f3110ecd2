/*
 * cnilog: one formatted line per call, written with a single write(2) so
 * that concurrent plugin invocations appending to the same file do not
 * interleave within a line.
 */
#include "cni-plugin/cnilog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;
static const char *log_cmd = "-";
static const char *log_cid = "-";

void cnilog_context(const char *command, const char *container_id)
{
	log_cmd = command && *command ? command : "-";
	log_cid = container_id && *container_id ? container_id : "-";
}

int cnilog_open(const char *path)
{
	int fd;

	if (!path || !*path)
		return 0;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return -errno;
	cnilog_close();
	log_fd = fd;
	return 0;
}

void cnilog_close(void)
{
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
}

void cnilog(enum cnilog_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
	             "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s pid=%d cmd=%s container=%.64s ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             ts.tv_nsec / 1000000, names[lvl], (int)getpid(), log_cmd, log_cid);
	n = r < 0 ? 0 : (size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1;
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (r > 0)
		n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* Best effort: a full disk must not turn into a CNI failure. */
	if (write(log_fd, line, n) < 0)
		return;
}
