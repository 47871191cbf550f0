/* NAME/stats and .sandboxfs/summary: generated at open from the model's
 * metrics (backend/stats.c).  NAME/events and .sandboxfs/events are
 * streams: fs/stream.c. */
#include <errno.h>
#include <stdlib.h>

#include "fs_internal.h"
#include "log.h"

static int stats_open(struct handle *h, int flags)
{
	struct sbx_err err = { 0 };
	h->data = sandbox_stats_text(h->sbx, &h->len, &err);
	if (!h->data)
		return refusal(err.code ? err.code : EIO, "sandbox %s: stats: %s",
			       sandbox_name(h->sbx), err.msg);
	return 0;
}

static int summary_open(struct handle *h, int flags)
{
	h->data = model_summary(&h->len);
	return h->data ? 0 : ENOMEM;
}

const struct file_ops stats_file_ops = { .open = stats_open };
const struct file_ops summary_file_ops = { .open = summary_open };
