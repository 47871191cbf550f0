/* libFuzzer target: the daemon's side of the agent protocol — frame
 * headers and every payload decoder, as a hostile agent would send them
 * (backend/agent_proto.c, backend/agent_channel.c). */
#include "agent_channel.h"
#include "agent_proto.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	struct agent_frame f;
	size_t used;
	while (agent_frame_parse(data + off, size - off, &f, &used) == 1) {
		fuzz_assert(used >= AGENT_HDR && used <= size - off);
		fuzz_assert(f.len <= AGENT_MAX_PAYLOAD);
		struct agent_spawn sp;
		struct agent_data d;
		struct agent_exit e;
		uint32_t a, b;
		uint64_t x, y;
		int32_t err;
		const char *msg;
		if (agent_decode_spawn(&f, &sp) == 0)
			fuzz_assert(sp.cmd_len + sp.env_len + sp.cwd_len + 20 == f.len);
		if (agent_decode_data(&f, &d) == 0)
			fuzz_assert(d.len <= AGENT_MAX_DATA && (d.stream == 1 || d.stream == 2));
		if (agent_decode_exit(&f, &e) == 0)
			fuzz_assert(e.code >= 0 && e.code <= 255);
		agent_decode_u32(&f, &a);
		agent_decode_pair(&f, &a, &b);
		agent_decode_u64x2(&f, &x, &y);
		if (agent_decode_fail(&f, &err, &msg, &a) == 0)
			fuzz_assert(a <= 512 && err > 0);
		off += used;
	}
	agent_channel_fuzz(data, size);
	return 0;
}
