/*
 * log: levelled, structured (key=value) logging to stderr for node-proxy.
 *
 * One line per event, written with a single write(2) so lines from
 * different threads never interleave.  The data path logs nothing at the
 * default level; per-connection events are LOG_DEBUG.
 */
#ifndef AMBIT_NP_LOG_H
#define AMBIT_NP_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern int log_level_cur;

/* "error", "warn", "info", "debug" -> level, or -1. */
int log_level_parse(const char *s);
const char *log_level_name(int lvl);
void log_set_level(int lvl);
void log_msg(int lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG(lvl, ...)                                                                              \
	do {                                                                                       \
		if ((lvl) <= log_level_cur)                                                        \
			log_msg((lvl), __VA_ARGS__);                                               \
	} while (0)
#define log_err(...)   LOG(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  LOG(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) LOG(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
