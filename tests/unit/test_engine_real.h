/* test_engine.c, part two: against a real engine (REAL_DOCKER), skipped
 * when none answers.  Included once, by test_engine.c. */

/* Runs `cmd` through the run wrapper; returns the exit code, -1 on error.
 * out gets stdout without the pid line, *pid the wrapper's pid. */
static int real_run(struct engine *e, const char *cid, const char *env, const char *cmd,
		    size_t cmd_len, char *out, size_t cap, long *pid)
{
	struct engine_exec ex;
	struct sbx_err err;
	size_t off = 0, n = 0;
	int st;

	if (engine_exec_start(e, cid, env, env ? strlen(env) : 0, NULL, NULL, &ex, &err) < 0) {
		printf("# %s\n", err.msg);
		return -1;
	}
	while (off < cmd_len) {
		struct pollfd p[2] = { { .fd = ex.stdin_fd, .events = POLLOUT },
				       { .fd = ex.stdout_fd, .events = POLLIN } };
		poll(p, 2, 1000);
		ssize_t w = spawn_write_nosigpipe(ex.stdin_fd, cmd + off, cmd_len - off);
		if (w > 0)
			off += (size_t)w;
		else if (errno != EAGAIN)
			break;
		/* keep stdout flowing so a chatty command cannot stall us */
		if (p[1].revents && n < cap - 1) {
			ssize_t r = read(ex.stdout_fd, out + n, cap - 1 - n);
			if (r > 0)
				n += (size_t)r;
		}
	}
	close(ex.stdin_fd);
	n += read_all(ex.stdout_fd, out + n, cap - n, 30000);
	out[n] = '\0';
	char errbuf[512];
	read_all(ex.stderr_fd, errbuf, sizeof(errbuf), 100);
	if (errbuf[0])
		printf("# stderr: %s", errbuf);
	waitpid(ex.pid, &st, 0);
	close(ex.stdout_fd);
	close(ex.stderr_fd);
	char *nl = strchr(out, '\n');
	*pid = nl ? strtol(out, NULL, 10) : -1;
	if (nl)
		memmove(out, nl + 1, strlen(nl + 1) + 1);
	return spawn_exit_code(st);
}

/* Reads events until one of `kind` for `id` arrives. */
static int wait_event(int fd, const char *id, enum engine_event_kind kind, int *exit_code)
{
	static char buf[65536];
	static size_t len;
	int64_t end = now_ms() + 15000;

	for (;;) {
		char *nl;
		while ((nl = memchr(buf, '\n', len))) {
			struct engine_event ev;
			size_t l = (size_t)(nl - buf);
			int r = engine_parse_event(buf, l, &ev);
			memmove(buf, nl + 1, len - l - 1);
			len -= l + 1;
			if (r == 0 && ev.kind == kind && strcmp(ev.id, id) == 0) {
				if (exit_code)
					*exit_code = ev.exit_code;
				return 1;
			}
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(end - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return 0;
		ssize_t r = read(fd, buf + len, sizeof(buf) - len);
		if (r <= 0 && !(r < 0 && errno == EAGAIN))
			return 0;
		if (r > 0)
			len += (size_t)r;
	}
}

static void test_real(void)
{
	const char *cli = getenv("REAL_DOCKER");
	char instance[17], out[4096], *cid = NULL, *ver = NULL;
	struct engine e = { .cli = (char *)cli, .instance = instance, .timeout_ms = 60000 };
	struct sbx_err err;
	long pid;

	snprintf(instance, sizeof(instance), "%08x%08x", (unsigned)getpid(), (unsigned)time(NULL));
	if (!cli || !*cli || engine_check(&e, &ver, &err) < 0) {
		SKIP("no container engine (%s)", cli && *cli ? err.msg : "REAL_DOCKER unset");
		return;
	}
	printf("# engine %s via %s\n", ver, cli);
	free(ver);

	pid_t epid;
	int efd;
	is_call(engine_events_start(&e, &epid, &efd, &err), 0, "real: events");
	struct container_spec spec = { .name = "t1",
				       .image = "sandboxfs/base",
				       .mountpoint = "/mnt/test",
				       .pids_limit = 512,
				       .init = 1 };
	char cname[64];
	snprintf(cname, sizeof(cname), "sandboxfs-%s-t1", instance);
	is_call(engine_create(&e, &spec, &cid, &err), 0, "real: create");
	if (!cid)
		goto out;
	ok(wait_event(efd, cid, ENGINE_EV_START, NULL), "real: start event");

	char *dup_id = NULL;
	is_call(engine_create(&e, &spec, &dup_id, &err), -EEXIST, "real: same name twice");
	ok(one_line(err.msg), "real: EEXIST reason '%s'", err.msg);
	is_call(engine_is_running(&e, cname, &err), 1, "real: running");

	struct engine_container *v;
	size_t n;
	is_call(engine_list(&e, &v, &n, &err), 0, "real: list");
	ok(n == 1 && strcmp(v[0].id, cid) == 0 && strcmp(v[0].sandbox, "t1") == 0 && v[0].running,
	   "real: list shows t1 running");
	engine_containers_free(v, n);

	static const char cmd1[] = "echo \"v=$SBX_T\"; echo to-stderr >&2; exit 3";
	is_int(real_run(&e, cid, "SBX_T=hello world\n", cmd1, strlen(cmd1), out, sizeof(out), &pid),
	       3, "real: exit code");
	is_text(out, "v=hello world\n", "real: env and output");
	ok(pid > 1, "real: wrapper pid %ld", pid);

	/* 1 MiB of script: beyond what one argv string may carry. */
	size_t big = 1 << 20;
	char *script = malloc(big + 64);
	if (!script)
		abort();
	memcpy(script, ": '", 3);
	memset(script + 3, 'x', big);
	strcpy(script + 3 + big, "'\necho big-ok\n");
	is_int(real_run(&e, cid, NULL, script, strlen(script), out, sizeof(out), &pid), 0,
	       "real: 1 MiB command");
	is_text(out, "big-ok\n", "real: 1 MiB command ran");
	free(script);

	/* kill reaches the group: the wrapper and what it started. */
	struct engine_exec ex;
	static const char cmd2[] = "sleep 1000 & sleep 1000\n";
	is_call(engine_exec_start(&e, cid, "", 0, NULL, NULL, &ex, &err), 0, "real: exec sleep");
	spawn_write_nosigpipe(ex.stdin_fd, cmd2, strlen(cmd2));
	close(ex.stdin_fd);
	char line[64] = "";
	for (int64_t end = now_ms() + 10000; !strchr(line, '\n') && now_ms() < end;)
		read_all(ex.stdout_fd, line + strlen(line), sizeof(line) - strlen(line), 200);
	pid = strtol(line, NULL, 10);
	usleep(300000);
	is_call(engine_kill_group(&e, cid, pid, 9, &err), 0, "real: kill group %ld", pid);
	int st;
	waitpid(ex.pid, &st, 0);
	is_int(spawn_exit_code(st), 137, "real: killed run exits 137");
	close(ex.stdout_fd);
	close(ex.stderr_fd);
	static const char cmd4[] = "ps -o comm | grep -c sleep";
	is_int(real_run(&e, cid, NULL, cmd4, strlen(cmd4), out, sizeof(out), &pid), 0, "real: ps");
	is_text(out, "1\n", "real: only the container's own sleep is left");
	is_call(engine_kill_group(&e, cid, 4242, 9, &err), -ESRCH, "real: kill a gone group");

	is_call(engine_put_file(&e, cid, "~/.sbx/dir/secret.json", "{\"k\":1}\n", 8, &err), 0,
		"real: put_file");
	static const char cmd3[] = "stat -c %a ~/.sbx/dir/secret.json; cat ~/.sbx/dir/secret.json";
	real_run(&e, cid, NULL, cmd3, strlen(cmd3), out, sizeof(out), &pid);
	is_text(out, "600\n{\"k\":1}\n", "real: file mode 0600 and content");

	is_call(engine_stop(&e, cname, &err), 0, "real: stop");
	int code = -2;
	ok(wait_event(efd, cid, ENGINE_EV_DIE, &code), "real: die event (exit %d)", code);
	is_call(engine_is_running(&e, cname, &err), 0, "real: stopped");
	is_call(engine_kill_group(&e, cid, 42, 9, &err), -EHOSTDOWN, "real: kill in a stopped one");
	ok(one_line(err.msg) && strstr(err.msg, "is not running"), "real: '%s'", err.msg);
	is_call(engine_start(&e, cname, &err), 0, "real: start");
	is_call(engine_is_running(&e, cname, &err), 1, "real: running again");

out:
	is_call(engine_destroy(&e, cname, &err), 0, "real: destroy");
	if (cid)
		ok(wait_event(efd, cid, ENGINE_EV_DESTROY, NULL), "real: destroy event");
	is_call(engine_destroy(&e, cname, &err), 0, "real: destroy again");
	is_call(engine_is_running(&e, cname, &err), -ENOENT, "real: gone");
	is_call(engine_stop(&e, cname, &err), -ENOENT, "real: stop a gone one");
	kill(epid, SIGKILL);
	waitpid(epid, NULL, 0);
	close(efd);
	free(cid);
}
