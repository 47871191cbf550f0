/* Unit tests of the streaming masker (backend/mask.c). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask.h"
#include "tap.h"

struct sink {
	char *buf;
	size_t len, cap;
	int calls;
	const char *last_ptr; /* the pointer emit received last */
	int fail;	      /* return this (negative) from emit */
};

static int sink_emit(void *ctx, const char *buf, size_t len)
{
	struct sink *s = ctx;

	s->calls++;
	s->last_ptr = buf;
	if (s->fail)
		return s->fail;
	if (s->len + len + 1 > s->cap) {
		s->cap = (s->len + len + 1) * 2;
		s->buf = realloc(s->buf, s->cap);
		if (!s->buf)
			abort();
	}
	memcpy(s->buf + s->len, buf, len);
	s->len += len;
	s->buf[s->len] = '\0';
	return 0;
}

static void sink_reset(struct sink *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

static const char *sink_str(struct sink *s)
{
	return s->buf ? s->buf : "";
}

/* Masks stream pushed in pieces cut at cuts[0..ncuts) (ascending). */
static void mask_cut(const struct mask_secret *sec, size_t nsec, const char *stream, size_t len,
		     const size_t *cuts, size_t ncuts, struct sink *out)
{
	struct masker m;
	size_t prev = 0;

	if (masker_init_bytes(&m, sec, nsec) < 0)
		abort();
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;

		if (mask_push(&m, stream + prev, end - prev, sink_emit, out) < 0)
			abort();
		prev = end;
	}
	if (mask_flush(&m, sink_emit, out) < 0 || m.carry_len != 0)
		abort();
	masker_free(&m);
}

static const char *mask_str(const char *const *vals, size_t n, const char *stream,
			    const size_t *cuts, size_t ncuts, struct sink *out)
{
	struct mask_secret sec[8];

	for (size_t i = 0; i < n; i++)
		sec[i] = (struct mask_secret){ (char *)vals[i], strlen(vals[i]) };
	sink_reset(out);
	mask_cut(sec, n, stream, strlen(stream), cuts, ncuts, out);
	return sink_str(out);
}

/* The definition: leftmost match, longest at that position, then go on after it. */
static void mask_reference(const struct mask_secret *sec, size_t nsec, const char *s, size_t len,
			   struct sink *out)
{
	size_t pos = 0;

	while (pos < len) {
		size_t best = 0;

		for (size_t i = 0; i < nsec; i++) {
			size_t l = sec[i].len;

			if (l >= MASK_MIN_LEN && l > best && len - pos >= l &&
			    memcmp(s + pos, sec[i].value, l) == 0)
				best = l;
		}
		if (best) {
			sink_emit(out, MASK_REPLACEMENT, 3);
			pos += best;
		} else {
			sink_emit(out, s + pos, 1);
			pos++;
		}
	}
}

static void test_basic(void)
{
	const char *one[] = { "SECRET" };
	struct sink out = { 0 };

	is_str(mask_str(one, 1, "hello SECRET world", NULL, 0, &out), "hello *** world",
	       "secret in one push");
	is_str(mask_str(one, 1, "SECRETSECRET", NULL, 0, &out), "******", "adjacent occurrences");
	is_str(mask_str(one, 1, "SECRE", NULL, 0, &out), "SECRE", "a prefix alone is not masked");
	is_str(mask_str(one, 1, "", NULL, 0, &out), "", "empty stream");
	sink_reset(&out);
}

static void test_split_two(void)
{
	const char *one[] = { "SECRET" };
	const char *stream = "ab SECRET cd SECRET";
	struct sink out = { 0 };
	int bad = 0;

	for (size_t cut = 0; cut <= strlen(stream); cut++) {
		const char *got = mask_str(one, 1, stream, &cut, 1, &out);

		if (strcmp(got, "ab *** cd ***") != 0) {
			printf("# cut %zu: got '%s'\n", cut, got);
			bad++;
		}
	}
	is_int(bad, 0, "split at every position across two pushes");
	sink_reset(&out);
}

static void test_split_many(void)
{
	const char *two[] = { "password", "token" };
	const char *stream = "xpasswordytokenz";
	const char *want = "x***y***z";
	size_t n = strlen(stream), cuts[64];
	struct sink out = { 0 };
	int bad = 0;

	for (size_t a = 0; a <= n; a++)
		for (size_t b = a; b <= n; b++) {
			cuts[0] = a, cuts[1] = b;
			bad += strcmp(mask_str(two, 2, stream, cuts, 2, &out), want) != 0;
		}
	is_int(bad, 0, "split at every pair of positions (three pushes)");
	for (size_t i = 0; i < n; i++)
		cuts[i] = i;
	is_str(mask_str(two, 2, stream, cuts, n, &out), want, "one byte per push");
	sink_reset(&out);
}

static void test_overlap(void)
{
	const char *ov[] = { "abcd", "cdef" };
	const char *nested[] = { "abcd", "abcdef" };
	const char *inner[] = { "abcdefgh", "cdef" };
	const char *adj[] = { "abcd", "wxyz" };
	size_t cut = 4, cuts3[] = { 2, 5 };
	struct sink out = { 0 };

	is_str(mask_str(ov, 2, "abcdef", NULL, 0, &out), "***ef", "overlap: leftmost wins");
	is_str(mask_str(ov, 2, "xxcdefabcd", NULL, 0, &out), "xx******", "overlap: both, apart");
	is_str(mask_str(nested, 2, "abcdefg", NULL, 0, &out), "***g", "same start: longest wins");
	is_str(mask_str(nested, 2, "abcdefg", &cut, 1, &out), "***g",
	       "same start, split after the shorter one");
	is_str(mask_str(nested, 2, "abcdexg", &cut, 1, &out), "***exg",
	       "longer one does not complete: the shorter one is masked");
	is_str(mask_str(inner, 2, "abcdefgh", cuts3, 2, &out), "***",
	       "a long secret containing a shorter one");
	is_str(mask_str(inner, 2, "abcdefXh", cuts3, 2, &out), "ab***Xh",
	       "the long one fails: the inner one is masked");
	is_str(mask_str(adj, 2, "abcdwxyz", NULL, 0, &out), "******", "adjacent different secrets");
	sink_reset(&out);
}

static void test_hold_back(void)
{
	const char *one[] = { "abcd" };
	struct sink out = { 0 };
	struct masker m;

	masker_init(&m, one, 1);
	mask_push(&m, "xxabc", 5, sink_emit, &out);
	is_str(sink_str(&out), "xx", "a possible secret prefix is held back");
	is_int(m.carry_len, 3, "three bytes carried");
	mask_push(&m, "", 0, sink_emit, &out);
	is_str(sink_str(&out), "xx", "an empty push changes nothing");
	mask_flush(&m, sink_emit, &out);
	is_str(sink_str(&out), "xxabc", "flush releases the prefix unmasked");
	is_int(m.carry_len, 0, "flush resets the carry");
	mask_push(&m, "d", 1, sink_emit, &out);
	mask_flush(&m, sink_emit, &out);
	is_str(sink_str(&out), "xxabcd", "after flush a new stream starts");
	masker_free(&m);
	sink_reset(&out);
}

/* Only bytes that are a proper prefix of some secret are held back: any
 * other byte is emitted by the push that brought it. */
static void test_hold_back_minimal(void)
{
	const char *vals[] = { "SECRETVALUE", "PASSWORD12" };
	struct sink out = { 0 };
	struct masker m;

	masker_init(&m, vals, 2);
	mask_push(&m, "hello SE", 8, sink_emit, &out);
	is_str(sink_str(&out), "hello ", "only the prefix 'SE' is held");
	is_int(m.carry_len, 2, "two bytes carried");
	mask_push(&m, "Xworld", 6, sink_emit, &out);
	is_str(sink_str(&out), "hello SEXworld", "a byte ending the prefix releases it at once");
	is_int(m.carry_len, 0, "nothing carried");
	mask_push(&m, "S", 1, sink_emit, &out);
	mask_push(&m, "ECRETVALUE", 10, sink_emit, &out);
	is_str(sink_str(&out), "hello SEXworld***", "a secret split one byte in is masked");
	mask_push(&m, "PASSWORD1", 9, sink_emit, &out);
	is_int(m.carry_len, 9, "the longest possible prefix is held");
	mask_push(&m, "3", 1, sink_emit, &out);
	is_str(sink_str(&out), "hello SEXworld***PASSWORD13", "and released when it cannot match");
	is_int(m.carry_len, 0, "nothing carried after a mismatch");
	masker_free(&m);
	sink_reset(&out);
}

/* run.c masks output with a masker of its own over the merged stream, in
 * arrival order: a secret split across stdout and stderr is masked there,
 * and bytes held back for one stream never let the other's overtake them. */
static void test_merged_stream(void)
{
	const char *vals[] = { "SECRETVALUE" };
	struct sink merged = { 0 }, so = { 0 }, se = { 0 };
	struct masker mo, ms, me;

	masker_init(&mo, vals, 1);
	masker_init(&ms, vals, 1);
	masker_init(&me, vals, 1);
	/* stdout "SECR", stderr "ETVALUE" */
	mask_push(&ms, "SECR", 4, sink_emit, &so);
	mask_push(&mo, "SECR", 4, sink_emit, &merged);
	mask_push(&me, "ETVALUE", 7, sink_emit, &se);
	mask_push(&mo, "ETVALUE", 7, sink_emit, &merged);
	mask_flush(&ms, sink_emit, &so);
	mask_flush(&me, sink_emit, &se);
	mask_flush(&mo, sink_emit, &merged);
	is_str(sink_str(&merged), "***", "split across the streams: masked in output");
	is_str(sink_str(&so), "SECR", "stdout alone holds no secret");
	is_str(sink_str(&se), "ETVALUE", "stderr alone holds no secret");
	sink_reset(&merged);

	/* stdout "a" "SEC" (held), stderr "Z": output keeps arrival order. */
	mask_push(&mo, "a", 1, sink_emit, &merged);
	mask_push(&mo, "SEC", 3, sink_emit, &merged);
	is_str(sink_str(&merged), "a", "a prefix is held");
	mask_push(&mo, "Z", 1, sink_emit, &merged);
	is_str(sink_str(&merged), "aSECZ", "the other stream's byte comes after it, not before");
	masker_free(&mo);
	masker_free(&ms);
	masker_free(&me);
	sink_reset(&merged);
	sink_reset(&so);
	sink_reset(&se);
}

static void test_nul(void)
{
	struct mask_secret sec[] = { { "a\0b\0c", 5 } };
	const char stream[] = "x\0a\0b\0c\0y";
	const char want[] = "x\0***\0y";
	size_t cuts[] = { 3 };
	struct sink out = { 0 };

	mask_cut(sec, 1, stream, sizeof(stream) - 1, NULL, 0, &out);
	ok(out.len == sizeof(want) - 1 && memcmp(out.buf, want, out.len) == 0,
	   "NUL bytes in secret and stream");
	sink_reset(&out);
	mask_cut(sec, 1, stream, sizeof(stream) - 1, cuts, 1, &out);
	ok(out.len == sizeof(want) - 1 && memcmp(out.buf, want, out.len) == 0,
	   "NUL bytes, split inside the secret");
	sink_reset(&out);
}

static void test_ignored(void)
{
	const char *vals[] = { "abc", "", "abcd", "abcd", NULL };
	struct sink out = { 0 };
	struct masker m;

	is_int(masker_init(&m, vals, 5), 0, "init with short, empty, duplicate and NULL values");
	is_int(m.nsecrets, 1, "only one secret kept");
	is_int(m.maxlen, 4, "maxlen");
	mask_push(&m, "abc abcd", 8, sink_emit, &out);
	mask_flush(&m, sink_emit, &out);
	is_str(sink_str(&out), "abc ***", "short secret is not masked");
	masker_free(&m);
	masker_free(&m);
	ok(1, "masker_free twice is harmless");
	sink_reset(&out);
}

static void test_passthrough(void)
{
	const char *vals[] = { "ab" };
	const char *data = "some output abcd";
	struct sink out = { 0 };
	struct masker m;

	masker_init(&m, vals, 1);
	is_int(m.nsecrets, 0, "no usable secrets");
	is_int(mask_push(&m, data, 16, sink_emit, &out), 0, "push");
	ok(out.last_ptr == data, "zero secrets: emit gets the caller's buffer");
	is_int(out.calls, 1, "one emit per push");
	is_int(m.carry_len, 0, "nothing carried");
	is_int(mask_flush(&m, sink_emit, &out), 0, "flush");
	is_int(out.calls, 1, "flush emits nothing");
	is_str(sink_str(&out), data, "bytes unchanged");
	masker_free(&m);
	masker_init(&m, NULL, 0);
	is_int(mask_push(&m, data, 4, sink_emit, &out), 0, "NULL values, n = 0");
	masker_free(&m);
	sink_reset(&out);
}

static void test_emit_error(void)
{
	const char *vals[] = { "abcd" };
	struct sink out = { .fail = -EPIPE };
	struct masker m;

	masker_init(&m, vals, 1);
	is_int(mask_push(&m, "xyz abcd q", 10, sink_emit, &out), -EPIPE,
	       "push returns emit's error");
	masker_free(&m);
	masker_init(&m, vals, 1);
	out.fail = 0;
	mask_push(&m, "xyabc", 5, sink_emit, &out);
	out.fail = -ENOSPC;
	is_int(mask_flush(&m, sink_emit, &out), -ENOSPC, "flush returns emit's error");
	masker_free(&m);
	out.fail = -EIO;
	masker_init(&m, NULL, 0);
	is_int(mask_push(&m, "x", 1, sink_emit, &out), -EIO, "pass-through returns emit's error");
	masker_free(&m);
	out.fail = 0;
	sink_reset(&out);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

/* Random secrets over a small alphabet (many partial matches), random
 * streams made partly of secret pieces, random cuts: chunked == reference. */
static void test_random(void)
{
	char vals[6][24], stream[600];
	struct mask_secret sec[6];
	struct sink whole = { 0 }, chunked = { 0 };
	size_t cuts[64];
	int bad = 0;

	for (int iter = 0; iter < 20000; iter++) {
		size_t nsec = 1 + rnd(5), len = 0, ncuts = 0;

		for (size_t i = 0; i < nsec; i++) {
			size_t l = 3 + rnd(iter % 4 == 0 ? 20 : 6);

			for (size_t k = 0; k < l; k++)
				vals[i][k] = (char)("abc\0"[rnd(iter % 3 ? 2 : 4)]);
			sec[i] = (struct mask_secret){ vals[i], l };
		}
		while (len < 400) {
			if (rnd(3) == 0) {
				const struct mask_secret *s = &sec[rnd((uint32_t)nsec)];
				size_t l = 1 + rnd((uint32_t)s->len);

				memcpy(stream + len, s->value, l);
				len += l;
			} else {
				stream[len++] = (char)("abcx"[rnd(4)]);
			}
		}
		len = rnd((uint32_t)len + 1);
		for (size_t at = rnd(30); at < len && ncuts < 64; at += rnd(40))
			cuts[ncuts++] = at;
		sink_reset(&whole);
		sink_reset(&chunked);
		mask_reference(sec, nsec, stream, len, &whole);
		mask_cut(sec, nsec, stream, len, cuts, ncuts, &chunked);
		if (whole.len != chunked.len ||
		    (whole.len && memcmp(whole.buf, chunked.buf, whole.len) != 0)) {
			if (bad++ < 3)
				printf("# mismatch at iteration %d\n", iter);
		}
	}
	is_int(bad, 0, "random streams, random cuts: chunked equals the reference");
	sink_reset(&whole);
	sink_reset(&chunked);
}

/* A secret longer than a pipe read, split across several pushes. */
static void test_long_secret(void)
{
	size_t slen = 10000, len = 3 * slen;
	char *secret = malloc(slen), *stream = malloc(len);
	struct mask_secret sec[] = { { secret, slen }, { "short1", 6 } };
	struct sink ref = { 0 }, got = { 0 };
	size_t cuts[32], ncuts = 0;

	for (size_t i = 0; i < slen; i++)
		secret[i] = (char)('a' + i % 7);
	memset(stream, 'a', len);
	memcpy(stream + 5000, secret, slen);
	memcpy(stream + 5000 + slen + 3, "short1", 6);
	memcpy(stream + len - slen / 2, secret, slen / 2);
	for (size_t at = 4096; at < len; at += 4096)
		cuts[ncuts++] = at;
	mask_reference(sec, 2, stream, len, &ref);
	mask_cut(sec, 2, stream, len, cuts, ncuts, &got);
	ok(ref.len == got.len && memcmp(ref.buf, got.buf, ref.len) == 0,
	   "10000-byte secret across 4096-byte pushes");
	ok(ref.len == len - slen + 3 - 6 + 3, "it was masked once, the short one too");
	free(secret);
	free(stream);
	sink_reset(&ref);
	sink_reset(&got);
}

int main(void)
{
	test_basic();
	test_split_two();
	test_split_many();
	test_overlap();
	test_hold_back();
	test_hold_back_minimal();
	test_merged_stream();
	test_nul();
	test_ignored();
	test_passthrough();
	test_emit_error();
	test_random();
	test_long_secret();
	return tap_done();
}
