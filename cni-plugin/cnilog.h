/*
 * cnilog: where ambit-cni's diagnostics go.  Never stdout, which belongs
 * to the CNI result: a log file (the "logFile" config key, opened for
 * append) or else stderr, which runtimes capture into their own logs.
 * One line per event: time, level, pid, command, container id, message.
 */
#ifndef AMBIT_CNILOG_H
#define AMBIT_CNILOG_H

enum cnilog_level { CNILOG_ERR, CNILOG_WARN, CNILOG_INFO, CNILOG_DEBUG };

/* Remember the command and container id printed on every line (both
 * borrowed, must outlive logging). */
void cnilog_context(const char *command, const char *container_id);
/* Log to @path from now on (appending, created 0600).  NULL or "" keeps
 * stderr.  Returns 0 or -errno; on failure logging stays on stderr. */
int cnilog_open(const char *path);
void cnilog_close(void);
void cnilog(enum cnilog_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
