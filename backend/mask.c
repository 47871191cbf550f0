/* Streaming leftmost-longest masking of several secrets.
 *
 * The output must equal masking the whole stream at once: scan left to
 * right, at the leftmost position where some secret occurs replace the
 * longest one there by "***", continue after it.  A push sees carry + new
 * bytes; any tail of that window that is a proper prefix of a secret (found
 * with KMP, at most maxlen - 1 bytes) is held back, and so is everything
 * after the earliest such tail, because a match starting there would win. */
#include "mask.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define NEXT_UNKNOWN SIZE_MAX
#define NEXT_NONE (SIZE_MAX - 1)

static int is_duplicate(const struct masker *m, const char *v, size_t len)
{
	for (size_t i = 0; i < m->nsecrets; i++)
		if (m->secrets[i].len == len && memcmp(m->secrets[i].value, v, len) == 0)
			return 1;
	return 0;
}

/* pi[j]: length of the longest proper prefix of s[0..j] that is also its suffix. */
static size_t *kmp_table(const char *s, size_t len)
{
	size_t *pi = malloc(len * sizeof(*pi));
	size_t k = 0;

	if (!pi)
		return NULL;
	pi[0] = 0;
	for (size_t j = 1; j < len; j++) {
		while (k && s[j] != s[k])
			k = pi[k - 1];
		if (s[j] == s[k])
			k++;
		pi[j] = k;
	}
	return pi;
}

static int add_secret(struct masker *m, const char *v, size_t len)
{
	struct mask_secret *s = &m->secrets[m->nsecrets];

	if (!v || len < MASK_MIN_LEN || is_duplicate(m, v, len))
		return 0;
	s->value = malloc(len);
	m->fail[m->nsecrets] = kmp_table(v, len);
	if (!s->value || !m->fail[m->nsecrets]) {
		free(s->value);
		free(m->fail[m->nsecrets]);
		s->value = NULL;
		m->fail[m->nsecrets] = NULL;
		return -ENOMEM;
	}
	memcpy(s->value, v, len);
	s->len = len;
	if (len > m->maxlen)
		m->maxlen = len;
	m->nsecrets++;
	return 0;
}

static int alloc_arrays(struct masker *m, size_t n)
{
	memset(m, 0, sizeof(*m));
	if (!n)
		return 0;
	m->secrets = calloc(n, sizeof(*m->secrets));
	m->fail = calloc(n, sizeof(*m->fail));
	m->next = calloc(n, sizeof(*m->next));
	m->part = calloc(n, sizeof(*m->part));
	return m->secrets && m->fail && m->next && m->part ? 0 : -ENOMEM;
}

static int finish_init(struct masker *m)
{
	if (!m->nsecrets)
		return 0;
	m->carry = malloc(m->maxlen);
	m->window = malloc(2 * m->maxlen);
	return m->carry && m->window ? 0 : -ENOMEM;
}

int masker_init_bytes(struct masker *m, const struct mask_secret *secrets, size_t n)
{
	int r = alloc_arrays(m, n);

	for (size_t i = 0; r == 0 && i < n; i++)
		r = add_secret(m, secrets[i].value, secrets[i].len);
	if (r == 0)
		r = finish_init(m);
	if (r < 0)
		masker_free(m);
	return r;
}

int masker_init(struct masker *m, const char *const *values, size_t n)
{
	int r = alloc_arrays(m, n);

	for (size_t i = 0; r == 0 && i < n; i++)
		r = add_secret(m, values[i], values[i] ? strlen(values[i]) : 0);
	if (r == 0)
		r = finish_init(m);
	if (r < 0)
		masker_free(m);
	return r;
}

void masker_free(struct masker *m)
{
	for (size_t i = 0; i < m->nsecrets; i++) {
		free(m->secrets[i].value);
		free(m->fail[i]);
	}
	free(m->secrets);
	free(m->fail);
	free(m->next);
	free(m->part);
	free(m->carry);
	free(m->window);
	memset(m, 0, sizeof(*m));
}

static int emit_some(mask_emit_fn emit, void *ctx, const char *p, size_t n)
{
	return n ? emit(ctx, p, n) : 0;
}

static void reset_next(struct masker *m)
{
	for (size_t i = 0; i < m->nsecrets; i++)
		m->next[i] = NEXT_UNKNOWN;
}

/* The next occurrence of secret i at or after pos; cached per window so
 * that a far-away secret is not searched again for every nearer match. */
static size_t next_of(struct masker *m, size_t i, const char *data, size_t dlen, size_t pos)
{
	const struct mask_secret *s = &m->secrets[i];
	size_t nx = m->next[i];
	const char *hit = NULL;

	if (nx != NEXT_UNKNOWN && (nx == NEXT_NONE || nx >= pos))
		return nx;
	if (dlen - pos >= s->len)
		hit = memmem(data + pos, dlen - pos, s->value, s->len);
	m->next[i] = hit ? (size_t)(hit - data) : NEXT_NONE;
	return m->next[i];
}

/* Leftmost match at or after pos, longest among those at that position. */
static int find_match(struct masker *m, const char *data, size_t dlen, size_t pos, size_t *at,
		      size_t *len)
{
	int found = 0;

	for (size_t i = 0; i < m->nsecrets; i++) {
		size_t nx = next_of(m, i, data, dlen, pos);
		size_t l = m->secrets[i].len;

		if (nx == NEXT_NONE)
			continue;
		if (!found || nx < *at || (nx == *at && l > *len)) {
			*at = nx;
			*len = l;
			found = 1;
		}
	}
	return found;
}

/* Length of the longest suffix of data[from..dlen) that is a proper prefix
 * of secret i: KMP over at most len - 1 bytes, so it never completes. */
static size_t tail_state(const struct masker *m, size_t i, const char *data, size_t dlen,
			 size_t from)
{
	const struct mask_secret *s = &m->secrets[i];
	const size_t *pi = m->fail[i];
	size_t start = dlen - from >= s->len ? dlen - (s->len - 1) : from;
	size_t k = 0;

	for (size_t p = start; p < dlen; p++) {
		while (k && s->value[k] != data[p])
			k = pi[k - 1];
		if (s->value[k] == data[p])
			k++;
	}
	return k;
}

/* Where held-back bytes start: the earliest tail at or after pos that may
 * still grow into a secret.  Shorter candidates come from the failure chain. */
static size_t hold_from(struct masker *m, size_t dlen, size_t pos)
{
	size_t hold = dlen;

	for (size_t i = 0; i < m->nsecrets; i++) {
		size_t k = m->part[i];

		while (k && dlen - k < pos)
			k = m->fail[i][k - 1];
		m->part[i] = k;
		if (k && dlen - k < hold)
			hold = dlen - k;
	}
	return hold;
}

/* Masks data[pos..dlen) as the end of the window so far; unless final,
 * the undecided tail becomes the new carry. */
static int scan(struct masker *m, const char *data, size_t dlen, size_t pos, int final,
		mask_emit_fn emit, void *ctx)
{
	size_t hold = dlen, at, len;
	int r;

	reset_next(m);
	if (!final) {
		for (size_t i = 0; i < m->nsecrets; i++)
			m->part[i] = tail_state(m, i, data, dlen, pos);
		hold = hold_from(m, dlen, pos);
	}
	while (find_match(m, data, dlen, pos, &at, &len) && at < hold) {
		if ((r = emit_some(emit, ctx, data + pos, at - pos)) < 0 ||
		    (r = emit(ctx, MASK_REPLACEMENT, strlen(MASK_REPLACEMENT))) < 0)
			return r;
		pos = at + len;
		if (!final && pos > hold)
			hold = hold_from(m, dlen, pos);
	}
	if ((r = emit_some(emit, ctx, data + pos, hold - pos)) < 0)
		return r;
	if (!final) {
		memmove(m->carry, data + hold, dlen - hold);
		m->carry_len = dlen - hold;
	}
	return 0;
}

/* Decides every match that starts in the carry, in a window of carry plus
 * maxlen new bytes (enough to see any secret whole).  Returns the position
 * in the window where the rest of the new bytes must be scanned. */
static int junction(struct masker *m, size_t wlen, size_t limit, size_t *out, mask_emit_fn emit,
		    void *ctx)
{
	const char *w = m->window;
	size_t pos = 0, at, len;
	int r;

	reset_next(m);
	while (find_match(m, w, wlen, pos, &at, &len) && at < limit) {
		if ((r = emit_some(emit, ctx, w + pos, at - pos)) < 0 ||
		    (r = emit(ctx, MASK_REPLACEMENT, strlen(MASK_REPLACEMENT))) < 0)
			return r;
		pos = at + len;
	}
	if (pos < limit) {
		if ((r = emit(ctx, w + pos, limit - pos)) < 0)
			return r;
		pos = limit;
	}
	*out = pos;
	return 0;
}

int mask_push(struct masker *m, const char *buf, size_t len, mask_emit_fn emit, void *ctx)
{
	size_t clen = m->carry_len, take, pos;
	int r;

	if (!len)
		return 0;
	if (!m->nsecrets)
		return emit(ctx, buf, len);
	if (!clen)
		return scan(m, buf, len, 0, 0, emit, ctx);
	/* Only the bytes that can complete a match begun in the carry are copied. */
	take = len < m->maxlen ? len : m->maxlen;
	memcpy(m->window, m->carry, clen);
	memcpy(m->window + clen, buf, take);
	if (take == len)
		return scan(m, m->window, clen + len, 0, 0, emit, ctx);
	if ((r = junction(m, clen + take, clen, &pos, emit, ctx)) < 0)
		return r;
	m->carry_len = 0;
	return scan(m, buf, len, pos - clen, 0, emit, ctx);
}

int mask_flush(struct masker *m, mask_emit_fn emit, void *ctx)
{
	size_t clen = m->carry_len;

	if (!clen)
		return 0;
	m->carry_len = 0;
	return scan(m, m->carry, clen, 0, 1, emit, ctx);
}
