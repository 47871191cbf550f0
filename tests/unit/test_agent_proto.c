/* The agent protocol's framing and decoders (backend/agent_proto.c) and the
 * daemon-side parser's verdicts on hostile bytes (agent_channel_fuzz). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_channel.h"
#include "agent_proto.h"
#include "tap.h"

static size_t frame(uint8_t *out, uint32_t id, uint8_t type, const void *p, uint32_t len)
{
	agent_put_header(out, id, type, len);
	if (len)
		memcpy(out + AGENT_HDR, p, len);
	return AGENT_HDR + len;
}

static void test_header(void)
{
	uint8_t b[64];
	struct agent_frame f;
	size_t used = 0;
	size_t n = frame(b, 7, AG_PONG, NULL, 0);
	is_int(agent_frame_parse(b, n, &f, &used), 1, "empty frame");
	ok(f.id == 7 && f.type == AG_PONG && f.len == 0 && used == AGENT_HDR, "  fields");
	is_int(agent_frame_parse(b, n - 1, &f, &used), 0, "short header: need more");
	n = frame(b, 1, AG_STARTED, "\x2a\0\0\0", 4);
	is_int(agent_frame_parse(b, n - 1, &f, &used), 0, "short payload: need more");
	b[8] = 99;
	is_int(agent_frame_parse(b, n, &f, &used), -EPROTO, "unknown type");
	agent_put_header(b, 1, AG_DATA, AGENT_MAX_PAYLOAD + 1);
	is_int(agent_frame_parse(b, AGENT_HDR, &f, &used), -EPROTO, "length over the bound");
}

static void test_decoders(void)
{
	uint8_t b[128], p[64];
	struct agent_frame f;
	size_t used;
	struct agent_data d;
	struct agent_exit e;

	p[0] = 2;
	agent_put_u64(p + 1, 5);
	memcpy(p + 9, "xyz", 3);
	frame(b, 3, AG_DATA, p, 12);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_data(&f, &d), 0, "data");
	ok(d.stream == 2 && d.offset == 5 && d.len == 3 && !memcmp(d.bytes, "xyz", 3), "  fields");
	p[0] = 3;
	frame(b, 3, AG_DATA, p, 12);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_data(&f, &d), -EPROTO, "data: stream 3");

	memset(p, 0, 22);
	agent_put_u32(p + 2, 256);
	frame(b, 3, AG_EXIT, p, 22);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_exit(&f, &e), -EPROTO, "exit code 256");
	agent_put_u32(p + 2, 3);
	frame(b, 3, AG_EXIT, p, 22);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_exit(&f, &e), 0, "exit 3");
	p[0] = 1;
	agent_put_u32(p + 2, 65);
	frame(b, 3, AG_EXIT, p, 22);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_exit(&f, &e), -EPROTO, "signal 65");

	/* spawn: flags, timeout, then three strings */
	size_t o = 0;
	agent_put_u32(p, 1), agent_put_u32(p + 4, 0), o = 8;
	agent_put_u32(p + o, 4), memcpy(p + o + 4, "true", 4), o += 8;
	agent_put_u32(p + o, 0), o += 4;
	agent_put_u32(p + o, 4), memcpy(p + o + 4, "/tmp", 4), o += 8;
	frame(b, 9, AG_SPAWN, p, (uint32_t)o);
	agent_frame_parse(b, sizeof(b), &f, &used);
	struct agent_spawn s;
	is_int(agent_decode_spawn(&f, &s), 0, "spawn");
	ok(s.flags == 1 && s.cmd_len == 4 && !memcmp(s.cmd, "true", 4) && s.cwd_len == 4,
	   "  fields");
	p[12] = '\0';
	frame(b, 9, AG_SPAWN, p, (uint32_t)o);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_spawn(&f, &s), -EPROTO, "spawn: NUL in the command");
	frame(b, 9, AG_SPAWN, p, (uint32_t)o - 1);
	agent_frame_parse(b, sizeof(b), &f, &used);
	is_int(agent_decode_spawn(&f, &s), -EPROTO, "spawn: string past the end");
}

static void test_channel_verdicts(void)
{
	uint8_t b[256], p[32];
	size_t n = frame(b, 0, AG_PONG, NULL, 0);
	is_int(agent_channel_fuzz(b, n), 0, "pong: fine");
	/* Data that skips ahead of what was received is an error. */
	p[0] = 1;
	agent_put_u64(p + 1, 10);
	n = frame(b, 1, AG_DATA, p, 9);
	is_int(agent_channel_fuzz(b, n), -EPROTO, "data past a gap");
	agent_put_u64(p + 1, 0);
	memcpy(p + 9, "ab", 2);
	n = frame(b, 1, AG_DATA, p, 11);
	/* An exit whose totals do not match what was received. */
	memset(p, 0, 22);
	agent_put_u64(p + 6, 3);
	n += frame(b + n, 1, AG_EXIT, p, 22);
	is_int(agent_channel_fuzz(b, n), -EPROTO, "exit totals that do not add up");
	n = frame(b, 1, AG_HELLO, "\1\0\0\0", 4);
	is_int(agent_channel_fuzz(b, n), -EPROTO, "a daemon's frame from the agent");
	uint8_t junk[64];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	is_int(agent_channel_fuzz(junk, sizeof(junk)), -EPROTO, "junk");
}

int main(void)
{
	test_header();
	test_decoders();
	test_channel_verdicts();
	return tap_done();
}
