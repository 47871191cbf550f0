/* Framing and payload decoding of the agent protocol (agent_proto.h).
 * Every length is checked against what is left before it is used. */
#include "agent_proto.h"

#include <errno.h>
#include <string.h>

uint32_t agent_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t agent_get_u64(const uint8_t *p)
{
	return (uint64_t)agent_get_u32(p) | (uint64_t)agent_get_u32(p + 4) << 32;
}

void agent_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

void agent_put_u64(uint8_t *p, uint64_t v)
{
	agent_put_u32(p, (uint32_t)v);
	agent_put_u32(p + 4, (uint32_t)(v >> 32));
}

size_t agent_put_header(uint8_t *out, uint32_t id, uint8_t type, uint32_t len)
{
	agent_put_u32(out, len);
	agent_put_u32(out + 4, id);
	out[8] = type;
	return AGENT_HDR + len;
}

static bool known_type(uint8_t t)
{
	return (t >= AG_HELLO && t <= AG_PING) || (t >= AG_WELCOME && t <= AG_PONG);
}

int agent_frame_parse(const uint8_t *buf, size_t len, struct agent_frame *f, size_t *used)
{
	if (len < AGENT_HDR)
		return 0;
	uint32_t plen = agent_get_u32(buf);
	if (plen > AGENT_MAX_PAYLOAD || !known_type(buf[8]))
		return -EPROTO;
	if (len - AGENT_HDR < plen)
		return 0;
	f->len = plen;
	f->id = agent_get_u32(buf + 4);
	f->type = buf[8];
	f->payload = buf + AGENT_HDR;
	*used = AGENT_HDR + plen;
	return 1;
}

int agent_decode_u32(const struct agent_frame *f, uint32_t *v)
{
	if (f->len != 4)
		return -EPROTO;
	*v = agent_get_u32(f->payload);
	return 0;
}

int agent_decode_pair(const struct agent_frame *f, uint32_t *a, uint32_t *b)
{
	if (f->len != 8)
		return -EPROTO;
	*a = agent_get_u32(f->payload);
	*b = agent_get_u32(f->payload + 4);
	return 0;
}

int agent_decode_u64x2(const struct agent_frame *f, uint64_t *a, uint64_t *b)
{
	if (f->len != 16)
		return -EPROTO;
	*a = agent_get_u64(f->payload);
	*b = agent_get_u64(f->payload + 8);
	return 0;
}

/* A length-prefixed string at *off; NUL bytes inside are refused (they
 * would cut a command or an environment entry short). */
static int take_str(const struct agent_frame *f, uint32_t *off, const char **s, uint32_t *n)
{
	if (f->len - *off < 4)
		return -EPROTO;
	uint32_t k = agent_get_u32(f->payload + *off);
	*off += 4;
	if (f->len - *off < k)
		return -EPROTO;
	*s = (const char *)f->payload + *off;
	*n = k;
	if (k && memchr(*s, '\0', k))
		return -EPROTO;
	*off += k;
	return 0;
}

int agent_decode_spawn(const struct agent_frame *f, struct agent_spawn *s)
{
	uint32_t off = 8;
	if (f->len < 8)
		return -EPROTO;
	s->flags = agent_get_u32(f->payload);
	s->timeout_ms = agent_get_u32(f->payload + 4);
	if ((s->flags & ~AG_SPAWN_STDIN_OPEN) || take_str(f, &off, &s->cmd, &s->cmd_len) < 0 ||
	    take_str(f, &off, &s->env, &s->env_len) < 0 ||
	    take_str(f, &off, &s->cwd, &s->cwd_len) < 0 || off != f->len)
		return -EPROTO;
	return 0;
}

int agent_decode_data(const struct agent_frame *f, struct agent_data *d)
{
	if (f->len < 9 || f->len - 9 > AGENT_MAX_DATA)
		return -EPROTO;
	d->stream = f->payload[0];
	if (d->stream != 1 && d->stream != 2)
		return -EPROTO;
	d->offset = agent_get_u64(f->payload + 1);
	d->bytes = f->payload + 9;
	d->len = f->len - 9;
	/* Offsets past 2^62 are nonsense and would overflow off_t sums. */
	if (d->offset > (1ull << 62))
		return -EPROTO;
	return 0;
}

int agent_decode_exit(const struct agent_frame *f, struct agent_exit *e)
{
	if (f->len != 22 || f->payload[0] > 1 || f->payload[1] > 1)
		return -EPROTO;
	e->signaled = f->payload[0];
	e->timed_out = f->payload[1];
	e->code = (int32_t)agent_get_u32(f->payload + 2);
	e->out = agent_get_u64(f->payload + 6);
	e->err = agent_get_u64(f->payload + 14);
	if (e->signaled ? (e->code < 1 || e->code > 64) : (e->code < 0 || e->code > 255))
		return -EPROTO;
	if (e->out > (1ull << 62) || e->err > (1ull << 62))
		return -EPROTO;
	return 0;
}

int agent_decode_fail(const struct agent_frame *f, int32_t *err, const char **msg, uint32_t *len)
{
	if (f->len < 4 || f->len > 4 + 512)
		return -EPROTO;
	*err = (int32_t)agent_get_u32(f->payload);
	if (*err <= 0 || *err > 4095)
		return -EPROTO;
	*msg = (const char *)f->payload + 4;
	*len = f->len - 4;
	return 0;
}
