/* The settings files of a sandbox: env, auth, workdir, timeout, and ctl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "log.h"
#include "model_internal.h"
#include "workspace.h"

static int sandbox_set_env(struct sandbox *s, const char *buf, size_t len, bool replace,
			   struct sbx_err *err)
{
	struct kv_list parsed = { 0 };
	int rc = parse_kv_lines(buf, len, &parsed, err);
	if (rc < 0)
		return sbx_err_wrap(err, "env");

	sbx_lock(&model_lock);
	struct kv_list next = { 0 };
	if (!replace)
		rc = kv_list_copy(&next, &s->env);
	for (size_t i = 0; rc == 0 && i < parsed.n; i++)
		rc = kv_list_set(&next, parsed.keys[i], parsed.values[i]);
	if (rc == 0 && kv_list_env_bytes(&next) + kv_list_env_bytes(&s->auth) > SBX_ENV_TOTAL_MAX)
		rc = -E2BIG;
	if (rc == 0) {
		kv_list_free(&s->env);
		s->env = next;
		clock_gettime(CLOCK_REALTIME, &s->settings_changed);
	} else {
		kv_list_free(&next);
	}
	sbx_unlock(&model_lock);
	kv_list_free(&parsed);
	if (rc == -E2BIG)
		return sbx_err_set(err, EINVAL, "env: env and auth together would exceed %u bytes",
				   SBX_ENV_TOTAL_MAX);
	return rc < 0 ? sbx_err_set(err, -rc, "env: out of memory") : 0;
}

static bool has_path(char **paths, size_t n, const char *p)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(paths[i], p))
			return true;
	return false;
}

static int sandbox_set_auth(struct sandbox *s, const char *buf, size_t len, bool replace,
			    bool quiet, struct sbx_err *err)
{
	struct auth_doc doc = { 0 };
	int rc = parse_auth(buf, len, &doc, err);
	if (rc < 0)
		return sbx_err_wrap(err, "auth");

	/* Before anything is placed: what the engine could not carry. */
	sbx_lock(&model_lock);
	struct kv_list probe = { 0 };
	rc = replace ? 0 : kv_list_copy(&probe, &s->auth);
	if (rc == 0)
		rc = kv_list_merge(&probe, &doc.env);
	size_t total = kv_list_env_bytes(&probe) + kv_list_env_bytes(&s->env);
	sbx_unlock(&model_lock);
	kv_list_free(&probe);
	if (rc == 0 && total > SBX_ENV_TOTAL_MAX)
		rc = sbx_err_set(err, EINVAL, "auth: env and auth together would exceed %u bytes",
				 SBX_ENV_TOTAL_MAX);
	else if (rc < 0)
		rc = sbx_err_set(err, ENOMEM, "auth: out of memory");
	if (rc < 0) {
		auth_doc_free(&doc);
		return rc;
	}

	/* Files first: if one cannot be placed, no variable changes. */
	if (doc.nfiles > 0) {
		sbx_lock(&model_lock);
		char *cid = strdup(s->container_id ? s->container_id : s->container);
		bool running = s->state == SBX_RUNNING;
		sbx_unlock(&model_lock);
		if (!cid)
			rc = sbx_err_set(err, ENOMEM, "auth: out of memory");
		if (rc == 0 && !running)
			rc = sbx_err_set(err, EHOSTDOWN, "auth: the container is not running");
		for (size_t i = 0; rc == 0 && i < doc.nfiles; i++) {
			rc = engine_put_file(s->engine, cid, doc.files[i].path,
					     doc.files[i].content, doc.files[i].len, err);
			if (rc < 0)
				sbx_err_wrap(err, "auth: placing %s", doc.files[i].path);
		}
		free(cid);
		if (rc < 0) {
			auth_doc_free(&doc);
			return rc;
		}
	}

	sbx_lock(&model_lock);
	struct kv_list next = { 0 };
	if (!replace)
		rc = kv_list_copy(&next, &s->auth);
	for (size_t i = 0; rc == 0 && i < doc.env.n; i++)
		rc = kv_list_set(&next, doc.env.keys[i], doc.env.values[i]);
	for (size_t i = 0; rc == 0 && i < doc.nfiles; i++) {
		rc = kv_list_set(&s->auth_file_secrets, doc.files[i].path, doc.files[i].content);
		if (rc < 0 || has_path(s->auth_files, s->nauth_files, doc.files[i].path))
			continue;
		char **v = realloc(s->auth_files, (s->nauth_files + 1) * sizeof(*v));
		char *p = strdup(doc.files[i].path);
		if (!v || !p) {
			free(p);
			if (v)
				s->auth_files = v;
			rc = -ENOMEM;
			break;
		}
		s->auth_files = v;
		s->auth_files[s->nauth_files++] = p;
	}
	if (rc == 0) {
		kv_list_free(&s->auth);
		s->auth = next;
		clock_gettime(CLOCK_REALTIME, &s->settings_changed);
	} else {
		kv_list_free(&next);
	}
	sbx_unlock(&model_lock);
	/* Names only: values never reach a log. */
	if (rc == 0 && !quiet)
		log_info("sandbox %s: auth %s (%zu variables, %zu files)", s->name,
			 replace ? "replaced" : "added", doc.env.n, doc.nfiles);
	auth_doc_free(&doc);
	return rc < 0 ? sbx_err_set(err, -rc, "auth: out of memory") : 0;
}

static int sandbox_set_workdir(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err)
{
	char *dir = NULL;
	int rc = parse_workdir(buf, len, &dir, err);
	if (rc < 0)
		return sbx_err_wrap(err, "workdir");
	sbx_lock(&model_lock);
	free(s->workdir);
	s->workdir = dir;
	clock_gettime(CLOCK_REALTIME, &s->settings_changed);
	sbx_unlock(&model_lock);
	return 0;
}

static int sandbox_set_timeout(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err)
{
	long secs = 0;
	int rc = parse_timeout(buf, len, &secs, err);
	if (rc < 0)
		return sbx_err_wrap(err, "timeout");
	sbx_lock(&model_lock);
	s->timeout = secs;
	clock_gettime(CLOCK_REALTIME, &s->settings_changed);
	sbx_unlock(&model_lock);
	return 0;
}

int sandbox_ctl(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err)
{
	struct ctl_cmd cmd;
	int rc = parse_ctl(buf, len, &cmd, err);
	if (rc < 0)
		return sbx_err_wrap(err, "ctl");

	char *cid = sandbox_container_dup(s);
	sbx_lock(&model_lock);
	struct run *latest = sandbox_killable_run_locked(s);
	if (latest)
		run_get_locked(latest);
	sbx_unlock(&model_lock);
	if (!cid) {
		if (latest)
			run_put(latest);
		return sbx_err_set(err, ENOMEM, "ctl: out of memory");
	}

	switch (cmd.verb) {
	case CTL_KILL:
		if (!latest)
			rc = sbx_err_set(err, ESRCH, "ctl kill: no live run to signal");
		else
			rc = run_kill(latest, cmd.signal, err);
		break;
	case CTL_STOP:
		rc = sandbox_stop(s, cid, "ctl", err);
		if (rc == 0) {
			sbx_lock(&model_lock);
			if (s->state == SBX_RUNNING)
				s->state = SBX_STOPPED;
			sandbox_changed_locked(s);
			s->user_stopped = true;
			sandbox_mark_runs_locked(s, false);
			sbx_unlock(&model_lock);
		}
		break;
	case CTL_START:
		rc = workspace_start_container(s->engine, cid, err);
		if (rc == 0) {
			events_simple("sandbox_started", s->name, "by", "ctl");
			sbx_lock(&model_lock);
			if (s->state == SBX_STOPPED)
				s->state = SBX_RUNNING;
			sandbox_changed_locked(s);
			s->user_stopped = false;
			sbx_unlock(&model_lock);
		}
		break;
	case CTL_EOF:
		if (!latest)
			rc = sbx_err_set(err, ESRCH, "ctl eof: no run");
		else
			rc = run_stdin_close(latest, err);
		break;
	case CTL_STDIN:
		sbx_lock(&model_lock);
		s->stdin_open = cmd.stdin_open;
		clock_gettime(CLOCK_REALTIME, &s->settings_changed);
		sbx_unlock(&model_lock);
		break;
	case CTL_PAUSE:
	case CTL_RESUME:
		rc = sandbox_pause(s, cid, cmd.verb == CTL_PAUSE, err);
		break;
	case CTL_SAVE:
		rc = sandbox_save(s, cid, cmd.image, err);
		if (rc == 0)
			log_info("sandbox %s: saved as %s", s->name, cmd.image);
		break;
	}
	free(cid);
	if (latest)
		run_put(latest);
	if (rc < 0) {
		sbx_lock(&model_lock);
		sandbox_set_error_locked(s, err->msg);
		sbx_unlock(&model_lock);
		if (strncmp(err->msg, "ctl", 3) != 0)
			sbx_err_wrap(err, "ctl");
	}
	return rc;
}

static int setting_apply(struct sandbox *s, enum setting which, const char *buf, size_t len,
			 bool replace, struct sbx_err *err)
{
	switch (which) {
	case SETTING_ENV:
		return sandbox_set_env(s, buf, len, replace, err);
	case SETTING_AUTH:
		return sandbox_set_auth(s, buf, len, replace, false, err);
	case SETTING_WORKDIR:
		return sandbox_set_workdir(s, buf, len, err);
	case SETTING_TIMEOUT:
		return sandbox_set_timeout(s, buf, len, err);
	case SETTING_TTL:
		return sandbox_set_ttl(s, buf, len, err);
	}
	return sbx_err_set(err, EINVAL, "no such setting");
}

int sandbox_setting_apply(struct sandbox *s, enum setting which, const char *buf, size_t len,
			  bool replace, struct sbx_err *err)
{
	size_t blen = 0, alen = 0;
	char *before = which == SETTING_AUTH ? sandbox_setting_text(s, which, &blen) : NULL;
	int rc = setting_apply(s, which, buf, len, replace, err);
	char *after = rc == 0 && before ? sandbox_setting_text(s, which, &alen) : NULL;
	/* Names only, and only when they changed (a shell's `>` clears first). */
	if (after && (alen != blen || memcmp(before, after, alen) != 0))
		events_auth_changed(s);
	free(before);
	free(after);
	return rc;
}

int sandbox_setting_clear(struct sandbox *s, enum setting which, struct sbx_err *err)
{
	if (which == SETTING_AUTH)
		return sandbox_set_auth(s, "", 0, true, true, err);
	return sandbox_setting_apply(s, which, "", 0, true, err);
}

int setting_check_partial(enum setting which, const char *buf, size_t len, struct sbx_err *err)
{
	const char *nl = memrchr(buf, '\n', len);
	if (!nl)
		return 0;
	len = (size_t)(nl - buf) + 1;
	switch (which) {
	case SETTING_ENV:
	case SETTING_AUTH: {
		size_t i = 0;
		while (i < len && strchr(" \t\r\n", buf[i]))
			i++;
		if (i < len && buf[i] == '{')
			return 0; /* JSON: checked whole at close */
		cleanup_kv_list struct kv_list tmp = { 0 };
		return parse_kv_lines(buf, len, &tmp, err);
	}
	case SETTING_TIMEOUT:
	case SETTING_TTL: {
		long secs;
		return parse_timeout(buf, len, &secs, err);
	}
	case SETTING_WORKDIR: {
		cleanup_free char *dir = NULL;
		return parse_workdir(buf, len, &dir, err);
	}
	}
	return 0;
}

/* Appends "PATH\n" for each file placed by auth. */
static char *auth_names_locked(struct sandbox *s, size_t *len) SBX_REQUIRES(model_lock)
{
	const struct kv_list *lists[] = { &s->auth };
	size_t n = 0, extra = 0;
	char *text = kv_list_text(lists, 1, false, &n);
	for (size_t i = 0; text && i < s->nauth_files; i++)
		extra += strlen(s->auth_files[i]) + 1;
	char *t = text ? realloc(text, n + extra + 1) : NULL;
	if (!t) {
		free(text);
		return NULL;
	}
	for (size_t i = 0; i < s->nauth_files; i++)
		n += (size_t)sprintf(t + n, "%s\n", s->auth_files[i]);
	*len = n;
	return t;
}

char *sandbox_setting_text(struct sandbox *s, enum setting which, size_t *len)
{
	char *text = NULL;
	*len = 0;
	sbx_lock(&model_lock);
	switch (which) {
	case SETTING_AUTH:
		text = auth_names_locked(s, len);
		break;
	case SETTING_ENV: {
		const struct kv_list *lists[] = { &s->env };
		text = kv_list_text(lists, 1, true, len);
		break;
	}
	case SETTING_WORKDIR:
		if (asprintf(&text, "%s%s", s->workdir, s->workdir[0] ? "\n" : "") < 0)
			text = NULL;
		break;
	case SETTING_TIMEOUT:
	case SETTING_TTL:
		if (asprintf(&text, "%ld\n", which == SETTING_TTL ? s->ttl : s->timeout) < 0)
			text = NULL;
		break;
	}
	sbx_unlock(&model_lock);
	if (text && which != SETTING_AUTH && which != SETTING_ENV)
		*len = strlen(text);
	return text;
}

int setting_save(struct sandbox *s, enum setting which, struct setting_undo *u)
{
	int rc = 0;
	*u = (struct setting_undo){ .which = which };
	sbx_lock(&model_lock);
	switch (which) {
	case SETTING_ENV:
		rc = kv_list_copy(&u->kv, &s->env);
		break;
	case SETTING_AUTH:
		rc = kv_list_copy(&u->kv, &s->auth);
		break;
	case SETTING_WORKDIR:
		u->workdir = strdup(s->workdir);
		rc = u->workdir ? 0 : -ENOMEM;
		break;
	case SETTING_TIMEOUT:
		u->timeout = s->timeout;
		break;
	case SETTING_TTL:
		u->timeout = s->ttl;
		break;
	}
	sbx_unlock(&model_lock);
	return rc;
}

void setting_restore(struct sandbox *s, struct setting_undo *u)
{
	sbx_lock(&model_lock);
	switch (u->which) {
	case SETTING_ENV:
		kv_list_free(&s->env);
		s->env = u->kv;
		u->kv = (struct kv_list){ 0 };
		break;
	case SETTING_AUTH:
		kv_list_free(&s->auth);
		s->auth = u->kv;
		u->kv = (struct kv_list){ 0 };
		break;
	case SETTING_WORKDIR:
		free(s->workdir);
		s->workdir = u->workdir;
		u->workdir = NULL;
		break;
	case SETTING_TIMEOUT:
		s->timeout = u->timeout;
		break;
	case SETTING_TTL:
		s->ttl = u->timeout;
		break;
	}
	sbx_unlock(&model_lock);
	setting_undo_free(u);
}

void setting_undo_free(struct setting_undo *u)
{
	kv_list_free(&u->kv);
	free(u->workdir);
	u->workdir = NULL;
}
