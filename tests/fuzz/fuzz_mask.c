/* libFuzzer target: the streaming masker.  The input holds the secrets, the
 * places to cut the stream, and the stream; masking it in those pieces must
 * give exactly what masking it whole does, and what the definition says. */
#include "fuzz_common.h"
#include "mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_emit(void *ctx, const char *s, size_t n)
{
	struct buf *b = ctx;

	fuzz_assert(n > 0);
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		fuzz_assert(b->p);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

/* Leftmost match, longest at that position, go on after it. */
static void reference(const struct mask_secret *sec, size_t n, const char *s, size_t len,
		      struct buf *out)
{
	size_t pos = 0;

	while (pos < len) {
		size_t best = 0;

		for (size_t i = 0; i < n; i++)
			if (sec[i].len >= MASK_MIN_LEN && sec[i].len > best &&
			    len - pos >= sec[i].len &&
			    memcmp(s + pos, sec[i].value, sec[i].len) == 0)
				best = sec[i].len;
		if (best) {
			buf_emit(out, MASK_REPLACEMENT, 3);
			pos += best;
		} else {
			buf_emit(out, s + pos, 1);
			pos++;
		}
	}
}

/* Only what a match needs is held back: the carry is the start of some
 * secret (output never waits on bytes that cannot become one). */
static void carry_is_a_prefix(const struct masker *m)
{
	int found = m->carry_len == 0;

	for (size_t i = 0; !found && i < m->nsecrets; i++)
		found = m->secrets[i].len > m->carry_len &&
			memcmp(m->secrets[i].value, m->carry, m->carry_len) == 0;
	fuzz_assert(found);
}

static void masked(const struct mask_secret *sec, size_t n, const char *s, size_t len,
		   const size_t *cuts, size_t ncuts, struct buf *out)
{
	struct masker m;
	size_t prev = 0;

	fuzz_assert(masker_init_bytes(&m, sec, n) == 0);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts && cuts[i] < len ? cuts[i] : len;

		if (end < prev)
			end = prev;
		fuzz_assert(mask_push(&m, s + prev, end - prev, buf_emit, out) == 0);
		fuzz_assert(m.carry_len == 0 || m.carry_len < m.maxlen);
		carry_is_a_prefix(&m);
		prev = end;
	}
	fuzz_assert(mask_flush(&m, buf_emit, out) == 0);
	fuzz_assert(m.carry_len == 0);
	masker_free(&m);
}

static void same(const struct buf *a, const struct buf *b)
{
	if (a->len != b->len || (a->len && memcmp(a->p, b->p, a->len) != 0)) {
		fprintf(stderr, "masked outputs differ (%zu vs %zu bytes)\n", a->len, b->len);
		abort();
	}
}

/* Layout: flags, nsec x (len, bytes), ncuts x cut step, stream.  With the
 * small-alphabet flag all bytes fold into "ab\0c" so that secrets overlap. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mask_secret sec[4];
	struct buf whole = { 0 }, pieces = { 0 }, ref = { 0 };
	size_t nsec, ncuts, cuts[32], at = 1, pos = 0, len;
	char *copy;
	int fold;

	if (size < 2)
		return 0;
	copy = malloc(size);
	fuzz_assert(copy);
	fold = data[0] & 4;
	for (size_t i = 0; i < size; i++)
		copy[i] = fold ? "ab\0c"[data[i] & 3] : (char)data[i];
	nsec = 1 + (data[0] & 3);
	for (size_t i = 0; i < nsec; i++) {
		size_t l = at < size ? data[at++] % 40 : 0;

		if (l > size - at)
			l = size - at;
		sec[i] = (struct mask_secret){ copy + at, l };
		at += l;
	}
	ncuts = at < size ? data[at++] % 32 : 0;
	for (size_t i = 0; i < ncuts; i++) {
		pos += at < size ? data[at++] % 64 : 0;
		cuts[i] = pos;
	}
	len = size - at;
	masked(sec, nsec, copy + at, len, NULL, 0, &whole);
	masked(sec, nsec, copy + at, len, cuts, ncuts, &pieces);
	reference(sec, nsec, copy + at, len, &ref);
	same(&whole, &ref);
	same(&pieces, &ref);
	free(whole.p);
	free(pieces.p);
	free(ref.p);
	free(copy);
	return 0;
}
