/* The agent protocol: frames between the daemon and the agent inside a
 * sandbox (docs/agent-protocol.md).  Shared by both halves; no FUSE, no
 * model, no allocation in the parser.
 *
 * A frame is a 9-byte header — payload length (u32), request id (u32),
 * type (u8), all little-endian — and at most AGENT_MAX_PAYLOAD bytes of
 * payload.  Every field is validated by agent_frame_parse(): the other side
 * may be hostile. */
#ifndef SBX_AGENT_PROTO_H
#define SBX_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_PROTO_VERSION 1
#define AGENT_HDR 9
#define AGENT_MAX_PAYLOAD (4u << 20) /* spawn frames carry commands up to this */
#define AGENT_MAX_DATA (64u << 10)   /* data chunks the agent sends */
#define AGENT_MAX_RUNS 1024	     /* live runs one agent keeps */

enum agent_type {
	/* daemon → agent */
	AG_HELLO = 1,	    /* u32 version */
	AG_SPAWN = 2,	    /* u32 flags, u32 timeout_ms, str cmd, str env, str cwd */
	AG_STDIN = 3,	    /* bytes */
	AG_STDIN_CLOSE = 4, /* - */
	AG_SIGNAL = 5,	    /* u32 signal */
	AG_ACK = 6,	    /* u64 stdout bytes, u64 stderr bytes spooled */
	AG_RESUME = 7,	    /* u64 stdout bytes, u64 stderr bytes already spooled */
	AG_FORGET = 8,	    /* the run's end is recorded: drop it */
	AG_PING = 9,	    /* - */
	/* agent → daemon */
	AG_WELCOME = 32, /* u32 version, u32 agent pid */
	AG_STARTED = 33, /* u32 pid (= process group) */
	AG_DATA = 34,	 /* u8 stream (1 stdout, 2 stderr), u64 offset, bytes */
	AG_EXIT = 35,	 /* u8 signaled, u8 timed_out, i32 code|signal, u64 out, u64 err */
	AG_FAIL = 36,	 /* i32 errno, bytes message: the run did not start / unknown id */
	AG_PONG = 37,	 /* - */
};

#define AG_SPAWN_STDIN_OPEN 1u /* stdin is a pipe fed by AG_STDIN frames */

/* A frame as parsed: payload points into the caller's buffer. */
struct agent_frame {
	uint32_t id;
	uint8_t type;
	uint32_t len;
	const uint8_t *payload;
};

/* Decoded payloads (pointers into the frame). */
struct agent_spawn {
	uint32_t flags, timeout_ms;
	const char *cmd, *env, *cwd;
	uint32_t cmd_len, env_len, cwd_len;
};
struct agent_data {
	uint8_t stream;
	uint64_t offset;
	const uint8_t *bytes;
	uint32_t len;
};
struct agent_exit {
	bool signaled, timed_out;
	int32_t code;
	uint64_t out, err;
};

/* Parses the frame at the start of buf[0..len): 1 with *f and *used set,
 * 0 when more bytes are needed, -EPROTO for a header that no valid peer
 * sends (length over the bound, unknown type). */
int agent_frame_parse(const uint8_t *buf, size_t len, struct agent_frame *f, size_t *used);

/* Payload decoders: 0 or -EPROTO (wrong size, bad field). */
int agent_decode_u32(const struct agent_frame *f, uint32_t *v);
int agent_decode_pair(const struct agent_frame *f, uint32_t *a, uint32_t *b);
int agent_decode_u64x2(const struct agent_frame *f, uint64_t *a, uint64_t *b);
int agent_decode_spawn(const struct agent_frame *f, struct agent_spawn *s);
int agent_decode_data(const struct agent_frame *f, struct agent_data *d);
int agent_decode_exit(const struct agent_frame *f, struct agent_exit *e);
int agent_decode_fail(const struct agent_frame *f, int32_t *err, const char **msg, uint32_t *len);

/* Encoding into a caller's buffer of at least AGENT_HDR + payload bytes.
 * Each returns the frame's total size. */
size_t agent_put_header(uint8_t *out, uint32_t id, uint8_t type, uint32_t len);
void agent_put_u32(uint8_t *p, uint32_t v);
void agent_put_u64(uint8_t *p, uint64_t v);
uint32_t agent_get_u32(const uint8_t *p);
uint64_t agent_get_u64(const uint8_t *p);

#endif
