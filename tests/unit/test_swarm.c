/* The swarm section of the config and the templates placed by swarm
 * (backend/swarm.c, backend/template.c): what is taken, what is refused
 * and why. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "swarm.h"
#include "tap.h"
#include "template.h"

static int load(const char *json, struct sbx_err *err)
{
	cJSON *j = cJSON_Parse(json);
	int rc = swarm_config_load(j, err);
	cJSON_Delete(j);
	return rc;
}

static void test_config(void)
{
	struct sbx_err err = { 0 };
	static const struct {
		const char *json, *why;
	} bad[] = {
		{ "[]", "swarm: must be an object" },
		{ "{\"nodes\": {}}",
		  "swarm: nodes: an object of NODE_ID: ENGINE_URL, one at least" },
		{ "{\"nodes\": {\"Abc\": \"unix:///x\"}}",
		  "swarm: nodes: \"Abc\" is not a node id (docker node ls -q)" },
		{ "{\"nodes\": {\"abc\": \"http://x\"}}",
		  "swarm: nodes: abc: a unix://, tcp:// or ssh:// URL" },
		{ "{\"nodes\": {\"abc\": \"ssh://a b\"}}",
		  "swarm: nodes: abc: a unix://, tcp:// or ssh:// URL" },
		{ "{\"manager\": \"x\", \"nodes\": {\"abc\": \"unix:///x\"}}",
		  "swarm: manager: a unix://, tcp:// or ssh:// URL" },
		{ "{\"nodes\": {\"abc\": \"unix:///x\"}, \"y\": 1}", "swarm: unknown key \"y\"" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		is_int(load(bad[i].json, &err), -EINVAL, "refused: %s", bad[i].json);
		is_str(err.msg, bad[i].why, "reason of %s", bad[i].json);
	}
	swarm_config_free();
	ok(!swarm_configured(), "nothing configured after refusals");

	is_int(load("{\"manager\": \"ssh://u@m\", \"nodes\": {\"n1\": \"tcp://10.0.0.1:2376\", "
		    "\"n2\": \"unix:///run/d.sock\"}}",
		    &err),
	       0, "a good section");
	ok(swarm_configured(), "configured");
	const char *urls[8];
	is_int(swarm_endpoints(urls, 8), 3, "manager and two nodes");
	is_str(urls[0], "ssh://u@m", "manager first");
	is_str(urls[2], "unix:///run/d.sock", "then the nodes in order");
}

static int parse(const char *json, struct template **t, struct sbx_err *err)
{
	return template_parse("sw", json, strlen(json), t, err);
}

static void test_templates(void)
{
	struct sbx_err err = { 0 };
	struct template *t = NULL;
	is_int(parse("{\"placement\": \"swarm\", \"constraints\": [\"node.role==worker\"], "
		     "\"read_only\": true}",
		     &t, &err),
	       0, "a swarm template");
	ok(t && t->swarm && t->nconstraints == 1, "placement and constraints taken");
	is_str(t ? t->constraints[0] : NULL, "node.role==worker", "the constraint");
	char *eff = t ? template_effective_json(t, "img") : NULL;
	ok(eff && strstr(eff, "\"placement\":\"swarm\",\"constraints\":[\"node.role==worker\"]"),
	   "effective settings show the placement");
	cJSON_free(eff);
	template_free(t);

	static const struct {
		const char *json, *why;
	} bad[] = {
		{ "{\"placement\": \"swarm\", \"engine\": \"unix:///x\"}",
		  "template sw: placement: swarm picks the node: no \"engine\"" },
		{ "{\"placement\": \"swarm\", \"network\": \"bridge\"}",
		  "template sw: placement: swarm: network \"bridge\" does not exist in a swarm "
		  "(name an overlay network, or none)" },
		{ "{\"constraints\": [\"a==b\"]}",
		  "template sw: constraints: only with \"placement\": \"swarm\"" },
		{ "{\"placement\": \"swarm\", \"constraints\": [\"-x=1\"]}",
		  "template sw: constraints: \"KEY==VALUE\" or \"KEY!=VALUE\" strings" },
		{ "{\"placement\": \"swarm\", \"constraints\": \"a==b\"}",
		  "template sw: constraints: an array of at most 16 strings" },
		{ "{\"placement\": \"k8s\"}", "template sw: placement: \"engine\" or \"swarm\"" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = NULL;
		is_int(parse(bad[i].json, &t, &err), -EINVAL, "refused: %s", bad[i].json);
		is_str(err.msg, bad[i].why, "reason of %s", bad[i].json);
		ok(!t, "nothing made");
	}
	char dir[] = "/tmp/sbxsw-XXXXXX", json[128];
	if (mkdtemp(dir)) {
		snprintf(json, sizeof(json), "{\"placement\": \"swarm\", \"workspace\": \"%s\"}",
			 dir);
		t = NULL;
		is_int(parse(json, &t, &err), -EINVAL, "a workspace refused");
		is_str(err.msg,
		       "template sw: placement: swarm: workspaces are host directories, "
		       "which another node does not have",
		       "its reason");
		rmdir(dir);
	}
	swarm_config_free();
	is_int(parse("{\"placement\": \"swarm\"}", &t, &err), -EINVAL, "no swarm section");
	is_str(err.msg,
	       "template sw: placement: swarm needs a \"swarm\" section in the config file",
	       "its reason");
}

int main(void)
{
	test_config();
	test_templates();
	printf("1..%d\n", tap_n);
	return tap_failed != 0;
}
