#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#define RING_SIZE (256 * 1024)

/* log_lock guards everything below. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char ring[RING_SIZE];
static size_t ring_start, ring_len;
static int log_to_syslog, log_debug_on;
/* Prefix of every syslog line: one syslog holds the lines of every mount. */
static char syslog_mountpoint[1024];

void sbx_log_init(int use_syslog, int debug)
{
	pthread_mutex_lock(&log_lock);
	log_to_syslog = use_syslog;
	log_debug_on = debug;
	if (use_syslog)
		openlog("sandboxfs", LOG_PID, LOG_DAEMON);
	pthread_mutex_unlock(&log_lock);
}

void sbx_log_init_syslog(const char *mountpoint, int debug)
{
	pthread_mutex_lock(&log_lock);
	snprintf(syslog_mountpoint, sizeof(syslog_mountpoint), "%s", mountpoint);
	for (char *p = syslog_mountpoint; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	pthread_mutex_unlock(&log_lock);
	sbx_log_init(1, debug);
}

static void ring_append(const char *s, size_t n)
{
	if (n >= RING_SIZE) {
		s += n - (RING_SIZE - 1);
		n = RING_SIZE - 1;
	}
	while (ring_len + n > RING_SIZE) {
		/* Drop whole lines from the front so the ring starts on a line. */
		size_t drop = 0;
		while (drop < ring_len && ring[(ring_start + drop) % RING_SIZE] != '\n')
			drop++;
		drop = drop < ring_len ? drop + 1 : ring_len;
		ring_start = (ring_start + drop) % RING_SIZE;
		ring_len -= drop;
	}
	for (size_t i = 0; i < n; i++)
		ring[(ring_start + ring_len + i) % RING_SIZE] = s[i];
	ring_len += n;
}

void sbx_log(enum sbx_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[1024], line[1200], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One event, one line: hostile names must not forge lines or escapes. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : '?';

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	int n = snprintf(line, sizeof(line), "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000,
			 names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;

	pthread_mutex_lock(&log_lock);
	if (level != SBX_LOG_DEBUG || log_debug_on) {
		if (log_to_syslog)
			syslog(prio[level], "%s: %s", syslog_mountpoint, msg);
		else
			fprintf(stderr, "sandboxfs: %s: %s\n", names[level], msg);
	}
	if (level != SBX_LOG_DEBUG)
		ring_append(line, (size_t)n);
	pthread_mutex_unlock(&log_lock);
}

char *sbx_log_snapshot(size_t *len)
{
	pthread_mutex_lock(&log_lock);
	char *out = malloc(ring_len + 1);
	if (out) {
		for (size_t i = 0; i < ring_len; i++)
			out[i] = ring[(ring_start + i) % RING_SIZE];
		out[ring_len] = '\0';
		*len = ring_len;
	}
	pthread_mutex_unlock(&log_lock);
	return out;
}
