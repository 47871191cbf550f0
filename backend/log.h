/* The daemon's log: every line goes to stderr (or syslog once daemonized)
 * and into an in-memory ring that M/.sandboxfs/log serves.  Never log a
 * credential value: callers log names only. */
#ifndef SBX_LOG_H
#define SBX_LOG_H

#include <stddef.h>

enum sbx_log_level { SBX_LOG_ERROR, SBX_LOG_WARN, SBX_LOG_INFO, SBX_LOG_DEBUG };

void sbx_log_init(int use_syslog, int debug);
/* Daemonized: from now on to syslog (LOG_DAEMON, ident "sandboxfs", with
 * the pid), each line "MOUNTPOINT: message". */
void sbx_log_init_syslog(const char *mountpoint, int debug);
void sbx_log(enum sbx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A malloc'ed copy of the ring (oldest line first); caller frees. */
char *sbx_log_snapshot(size_t *len);

#define log_error(...) sbx_log(SBX_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) sbx_log(SBX_LOG_WARN, __VA_ARGS__)
#define log_info(...) sbx_log(SBX_LOG_INFO, __VA_ARGS__)
#define log_debug(...) sbx_log(SBX_LOG_DEBUG, __VA_ARGS__)

#endif
