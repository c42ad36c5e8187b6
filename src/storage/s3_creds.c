/*
 * s3_creds.c - the S3 access key pair: the config's, else a profile of the shared
 * credentials file the config names; and ms_s3_env_read(), which takes the settings the
 * AWS tools read from the environment through a lookup its caller (cli/, node/) passes, so
 * that nothing here reads the environment itself (DESIGN.md §2). Never logged (s3_int.h
 * inv. 3).
 */
#include "storage/s3_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *ms_s3_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/* Reads [profile] of an AWS shared credentials file; 0 with both set, else -ENOENT. */
static int ms_s3_creds_file(const char *path, const char *profile, char **ak, char **sk)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -ENOENT;
	char line[1024];
	bool in = false;
	while (fgets(line, sizeof(line), f)) {
		char *l = ms_s3_trim(line);
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (close) {
				*close = '\0';
				in = strcmp(ms_s3_trim(l + 1), profile) == 0;
			}
			continue;
		}
		char *eq = strchr(l, '=');
		if (!in || !eq || *l == '#' || *l == ';')
			continue;
		*eq = '\0';
		char *name = ms_s3_trim(l), *value = ms_s3_trim(eq + 1);
		char **slot = strcmp(name, "aws_access_key_id") == 0	   ? ak
			      : strcmp(name, "aws_secret_access_key") == 0 ? sk
									   : NULL;
		if (slot && *value) {
			free(*slot);
			*slot = strdup(value);
		}
	}
	fclose(f);
	if (*ak && *sk)
		return 0;
	free(*ak);
	free(*sk);
	*ak = *sk = NULL;
	return -ENOENT;
}

int ms_s3_credentials(const struct ms_s3_config *config, char **ak, char **sk)
{
	*ak = *sk = NULL;
	if (config->access_key && *config->access_key && config->secret_key &&
	    *config->secret_key) {
		*ak = strdup(config->access_key);
		*sk = strdup(config->secret_key);
	} else {
		const char *profile = config->profile;
		if (!config->credentials_file || !*config->credentials_file)
			return -EINVAL;
		int err = ms_s3_creds_file(config->credentials_file,
					   profile && *profile ? profile : "default", ak, sk);
		return err ? -EINVAL : 0;
	}
	if (!*ak || !*sk) {
		free(*ak);
		free(*sk);
		*ak = *sk = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* The first of names that lookup finds non-empty, copied into out (cut to fit); false: none. */
static bool ms_s3_env_first(ms_s3_env_lookup_fn lookup, const char *const *names, char *out,
			    size_t size)
{
	for (; *names; names++) {
		const char *v = lookup(*names);
		if (v && *v) {
			snprintf(out, size, "%s", v);
			return true;
		}
	}
	return false;
}

void ms_s3_env_read(struct ms_s3_env *env, ms_s3_env_lookup_fn lookup)
{
	memset(env, 0, sizeof(*env));
	ms_s3_env_first(lookup,
			(const char *const[]){"MEMSNAP_S3_ENDPOINT", "AWS_ENDPOINT_URL", NULL},
			env->endpoint, sizeof(env->endpoint));
	ms_s3_env_first(lookup, (const char *const[]){"AWS_REGION", NULL}, env->region,
			sizeof(env->region));
	/* a key pair counts only whole: both names of one convention set */
	static const char *const pairs[][2] = {{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
					       {"MEMSNAP_S3_ACCESS_KEY", "MEMSNAP_S3_SECRET_KEY"}};
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		const char *ak = lookup(pairs[i][0]), *sk = lookup(pairs[i][1]);
		if (ak && *ak && sk && *sk) {
			snprintf(env->access_key, sizeof(env->access_key), "%s", ak);
			snprintf(env->secret_key, sizeof(env->secret_key), "%s", sk);
			break;
		}
	}
	if (!ms_s3_env_first(lookup, (const char *const[]){"AWS_SHARED_CREDENTIALS_FILE", NULL},
			     env->credentials_file, sizeof(env->credentials_file))) {
		const char *home = lookup("HOME");
		if (home && *home)
			snprintf(env->credentials_file, sizeof(env->credentials_file),
				 "%s/.aws/credentials", home);
	}
	ms_s3_env_first(lookup, (const char *const[]){"AWS_PROFILE", NULL}, env->profile,
			sizeof(env->profile));
}

static void ms_s3_env_set(const char **field, const char *value)
{
	if ((!*field || !**field) && *value)
		*field = value;
}

void ms_s3_env_apply(const struct ms_s3_env *env, struct ms_s3_config *config)
{
	ms_s3_env_set(&config->endpoint, env->endpoint);
	ms_s3_env_set(&config->region, env->region);
	bool whole = config->access_key && *config->access_key && config->secret_key &&
		     *config->secret_key;
	if (!whole && *env->access_key) { /* the environment's whole pair over a half one */
		config->access_key = env->access_key;
		config->secret_key = env->secret_key;
	}
	ms_s3_env_set(&config->credentials_file, env->credentials_file);
	ms_s3_env_set(&config->profile, env->profile);
}
