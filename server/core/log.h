/*
 * log.h: leveled logging to stderr, one write(2) per line so lines from
 * different threads never interleave. Any thread may call every function here.
 */
#ifndef TYCHO_LOG_H
#define TYCHO_LOG_H

#include <stdatomic.h>

enum tycho_log_level { TYCHO_LOG_DEBUG, TYCHO_LOG_INFO, TYCHO_LOG_WARN, TYCHO_LOG_ERROR };

/* Lines below this level are dropped (--log-level). Set once, before threads start. */
extern enum tycho_log_level tycho_log_min_level;

/* "debug", "info", "warn" or "error" into *level: 0, or -1 for another word. */
int tycho_log_level_parse(const char *s, enum tycho_log_level *level);

/* Writes "TIME [level] message\n" to stderr. Messages longer than 8 KiB are cut. */
void tycho_log(enum tycho_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define tycho_log_info(...) tycho_log(TYCHO_LOG_INFO, __VA_ARGS__)
#define tycho_log_warn(...) tycho_log(TYCHO_LOG_WARN, __VA_ARGS__)
#define tycho_log_error(...) tycho_log(TYCHO_LOG_ERROR, __VA_ARGS__)

/*
 * Rate limit for a log line: returns 1 (and remembers now) when the line was
 * last allowed at least interval_s seconds ago, else 0. *last_s starts at 0.
 */
int tycho_log_allow(_Atomic long *last_s, long interval_s);

#include <stddef.h>

/*
 * --error-log FILE: tycho_log_open opens it (appending; created 0644) at
 * start-up, so a bad path stops the start (TYCHO_ERR with err filled);
 * tycho_log_redirect makes it stderr once the server is up (start-up
 * errors still reach the terminal); tycho_log_reopen opens it anew (SIGUSR1,
 * for logrotate) and logs that it did. Main thread.
 */
int tycho_log_open(const char *path, char *err, size_t err_len);
void tycho_log_redirect(void);
void tycho_log_reopen(void);

/* Logs at error level and exits with status 1. Start-up only. */
void tycho_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
