/*
 * s3_creds.c - the S3 static key (access key pair, optional session token): the config's,
 * else a profile of the shared credentials file the config names, else of its config file;
 * the region of the config file's profile; and ms_s3_env_read(), which takes the settings
 * the AWS tools read from the environment through a lookup its caller (cli/, node/) passes,
 * so that nothing here reads the environment itself (docs/design.md §2). Never logged (s3_int.h
 * inv. 3).
 */
#include "storage/s3_int.h"

#include <errno.h>
#include <stddef.h>
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

/*
 * Reads one section of an AWS ini file: "[profile]" of the shared credentials file, or
 * "[profile NAME]" ("[default]" for default) of the config file. Each name of names[]
 * found there is strdup'd into values[] (the last one wins). 0, -ENOENT (no file), -ENOMEM.
 */
static int ms_s3_ini_read(const char *path, const char *section, const char *const *names,
			  char **values, size_t count)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -ENOENT;
	char line[4096 + 64];
	bool in = false;
	int err = 0;
	while (!err && fgets(line, sizeof(line), f)) {
		char *l = ms_s3_trim(line);
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (close) {
				*close = '\0';
				in = strcmp(ms_s3_trim(l + 1), section) == 0;
			}
			continue;
		}
		char *eq = strchr(l, '=');
		if (!in || !eq || *l == '#' || *l == ';')
			continue;
		*eq = '\0';
		char *name = ms_s3_trim(l), *value = ms_s3_trim(eq + 1);
		for (size_t i = 0; i < count; i++) {
			if (strcmp(name, names[i]) != 0 || !*value)
				continue;
			free(values[i]);
			if (!(values[i] = strdup(value)))
				err = -ENOMEM;
		}
	}
	fclose(f);
	return err;
}

static const char *ms_s3_profile(const struct ms_s3_config *config)
{
	return config->profile && *config->profile ? config->profile : "default";
}

/* The config file names a profile "[profile NAME]", except "[default]". */
static void ms_s3_config_section(const struct ms_s3_config *config, char *out, size_t len)
{
	const char *profile = ms_s3_profile(config);
	if (strcmp(profile, "default") == 0)
		snprintf(out, len, "default");
	else
		snprintf(out, len, "profile %s", profile);
}

/* The key of one file's section into ak/sk/token (all or nothing). 0, -ENOENT, -ENOMEM. */
static int ms_s3_creds_file(const char *path, const char *section, char **ak, char **sk,
			    char **token)
{
	static const char *const names[] = {"aws_access_key_id", "aws_secret_access_key",
					    "aws_session_token"};
	char *values[3] = {NULL, NULL, NULL};
	int err = ms_s3_ini_read(path, section, names, values, 3);
	if (!err && values[0] && values[1]) {
		*ak = values[0];
		*sk = values[1];
		*token = values[2];
		return 0;
	}
	for (int i = 0; i < 3; i++)
		free(values[i]);
	return err == -ENOMEM ? err : -ENOENT;
}

int ms_s3_credentials(const struct ms_s3_config *config, char **ak, char **sk, char **token)
{
	*ak = *sk = *token = NULL;
	if (config->access_key && *config->access_key && config->secret_key &&
	    *config->secret_key) {
		*ak = strdup(config->access_key);
		*sk = strdup(config->secret_key);
		if (config->session_token && *config->session_token &&
		    !(*token = strdup(config->session_token))) {
			free(*ak);
			*ak = NULL; /* -ENOMEM below */
		}
	} else {
		int err = -ENOENT;
		if (config->credentials_file && *config->credentials_file)
			err = ms_s3_creds_file(config->credentials_file, ms_s3_profile(config), ak,
					       sk, token);
		if (err == -ENOENT && config->config_file && *config->config_file) {
			char section[160];
			ms_s3_config_section(config, section, sizeof(section));
			err = ms_s3_creds_file(config->config_file, section, ak, sk, token);
		}
		return err == -ENOENT ? -EINVAL : err;
	}
	if (!*ak || !*sk) {
		free(*ak);
		free(*sk);
		free(*token);
		*ak = *sk = *token = NULL;
		return -ENOMEM;
	}
	return 0;
}

char *ms_s3_config_region(const struct ms_s3_config *config)
{
	if (!config->config_file || !*config->config_file)
		return NULL;
	char section[160];
	ms_s3_config_section(config, section, sizeof(section));
	static const char *const names[] = {"region"};
	char *region = NULL;
	if (ms_s3_ini_read(config->config_file, section, names, &region, 1)) {
		free(region);
		return NULL;
	}
	return region;
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
			if (i == 0) /* the AWS pair's session token */
				ms_s3_env_first(lookup,
						(const char *const[]){"AWS_SESSION_TOKEN", NULL},
						env->session_token, sizeof(env->session_token));
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
	if (!ms_s3_env_first(lookup, (const char *const[]){"AWS_CONFIG_FILE", NULL},
			     env->config_file, sizeof(env->config_file))) {
		const char *home = lookup("HOME");
		if (home && *home)
			snprintf(env->config_file, sizeof(env->config_file), "%s/.aws/config",
				 home);
	}
	static const struct {
		const char *name;
		size_t offset, size;
	} more[] = {
#define MS_S3_ENV_FIELD(var, field)                                                                \
	{var, offsetof(struct ms_s3_env, field), sizeof(((struct ms_s3_env *)0)->field)}
	    MS_S3_ENV_FIELD("AWS_WEB_IDENTITY_TOKEN_FILE", web_identity_token_file),
	    MS_S3_ENV_FIELD("AWS_ROLE_ARN", role_arn),
	    MS_S3_ENV_FIELD("AWS_ROLE_SESSION_NAME", role_session_name),
	    MS_S3_ENV_FIELD("AWS_ENDPOINT_URL_STS", sts_endpoint),
	    MS_S3_ENV_FIELD("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_endpoint),
#undef MS_S3_ENV_FIELD
	};
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
		ms_s3_env_first(lookup, (const char *const[]){more[i].name, NULL},
				(char *)env + more[i].offset, more[i].size);
	const char *imds = lookup("MEMSNAP_S3_IMDS");
	env->imds = imds && (!strcmp(imds, "1") || !strcmp(imds, "on") || !strcmp(imds, "true"));
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
	bool whole =
	    config->access_key && *config->access_key && config->secret_key && *config->secret_key;
	if (!whole && *env->access_key) { /* the environment's whole pair over a half one */
		config->access_key = env->access_key;
		config->secret_key = env->secret_key;
		config->session_token = env->session_token[0] ? env->session_token : NULL;
	}
	ms_s3_env_set(&config->credentials_file, env->credentials_file);
	ms_s3_env_set(&config->config_file, env->config_file);
	ms_s3_env_set(&config->profile, env->profile);
	ms_s3_env_set(&config->web_identity_token_file, env->web_identity_token_file);
	ms_s3_env_set(&config->role_arn, env->role_arn);
	ms_s3_env_set(&config->role_session_name, env->role_session_name);
	ms_s3_env_set(&config->sts_endpoint, env->sts_endpoint);
	ms_s3_env_set(&config->imds_endpoint, env->imds_endpoint);
	config->imds = config->imds || env->imds;
}
