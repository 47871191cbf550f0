/* Templates: what a sandbox is made of (docs/templates.md).
 *
 * They come from the config file (-o config=FILE) and from writes to
 * M/.sandboxfs/templates/NAME; runtime changes persist in
 * STATE/templates.json.  templates_lock guards the list; lookups return
 * copies so callers never hold it. */
#ifndef SBX_TEMPLATE_H
#define SBX_TEMPLATE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

struct workspace {
	char *path; /* absolute host path, mounted at the same path inside */
	bool ro;
	char *source; /* at create: the checked, resolved path docker mounts (not owned) */
};

struct template
{
	char *name;
	uint32_t id; /* stable while the daemon lives: the file's inode */
	char *match; /* glob on the sandbox name, or NULL */
	char *image; /* NULL = the mount's default image */
	struct workspace *workspaces;
	size_t nworkspaces;
	char *workdir;	    /* default working directory of runs, or NULL */
	struct kv_list env; /* non-secret environment of the container */
	char *user;
	char *network;	  /* "none" unless opted in */
	long long memory; /* bytes, 0 = no limit */
	double cpus;	  /* 0 = no limit */
	long pids;	  /* 0 = no limit */
	long ttl;	  /* idle seconds before on_idle, 0 = none */
	bool idle_remove; /* on_idle: remove (else stop) */
	long pool;	  /* ready containers kept, -1 = the mount's -o pool */
	bool read_only;
	bool init;
	struct kv_list labels;
	char **cap_add;
	size_t ncap_add;
	char *engine;	    /* docker context name or host URL, NULL = default */
	bool swarm;	    /* "placement": "swarm" (backend/swarm.c) */
	char **constraints; /* swarm placement constraints */
	size_t nconstraints;
	char *text; /* the template as JSON, as served by the file */
};

#define TEMPLATE_DEFAULT_MEMORY (2LL << 30)
#define TEMPLATE_DEFAULT_PIDS 512
#define TEMPLATE_MAX_POOL 64

void template_free(struct template *t);
struct template *template_dup(const struct template *t);

/* Validates and builds a template from JSON.  mountpoint and state_dir are
 * refused as workspaces (and so is anything containing them, and the
 * docker socket). */
int template_parse(const char *name, const char *json, size_t len, struct template **out,
		   struct sbx_err *err);

/* 0 if json is not yet a complete JSON value or is a valid template;
 * else the error template_parse() gives. */
int template_check_complete(const char *name, const char *json, size_t len, struct sbx_err *err);

/* Loads the config file (may be NULL) and the persisted runtime changes. */
int templates_init(const char *config_path, const char *state_dir, const char *mountpoint,
		   struct sbx_err *err);
void templates_shutdown(void);

/* Defines or replaces a template at runtime; persisted.  A new template
 * takes want_id (from template_reserve_id) when it is not 0. */
int template_define(const char *name, const char *json, size_t len, uint32_t want_id,
		    struct sbx_err *err);
int template_delete(const char *name, struct sbx_err *err);
/* A copy of the template named, or by id; NULL if none. */
struct template *template_get(const char *name);
struct template *template_get_id(uint32_t id);
/* Reserves an id for a template file being created (its inode). */
uint32_t template_reserve_id(void);
/* Cheap look-ups (no parsing): 0 or -ENOENT (-ENOMEM). */
int template_id(const char *name, uint32_t *id);
int template_text_len(uint32_t id, size_t *len);
/* Copies of the name and canonical text of template id. */
int template_text(uint32_t id, char **name, char **text);
/* Names in matching order; caller frees the array and the strings. */
int template_names(char ***names, uint32_t **ids, size_t *n);
/* The template for a new sandbox: the first whose match glob matches,
 * else "default", else a built-in one with the hardened defaults. */
struct template *template_for(const char *sandbox_name, struct sbx_err *err);
/* The settings a sandbox made from t really gets, defaults filled in. */
char *template_effective_json(const struct template *t, const char *default_image);
/* The kernel spelling ("CAP_CHOWN") of an allowed capability name, or NULL. */
const char *template_canonical_cap(const char *name);
/* Every distinct engine that templates name (for events and adoption). */
int template_engines(char ***engines, size_t *n);

#endif
