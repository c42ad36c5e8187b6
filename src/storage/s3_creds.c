/*
 * s3_creds.c - the S3 access key pair: the config's, else the environment the AWS tools
 * read, else a profile of the shared credentials file. Never logged (s3_int.h inv. 3).
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

static bool ms_s3_env_pair(const char *a, const char *s, char **ak, char **sk)
{
	const char *av = getenv(a), *sv = getenv(s);
	if (!av || !*av || !sv || !*sv)
		return false;
	*ak = strdup(av);
	*sk = strdup(sv);
	return true;
}

int ms_s3_credentials(const struct ms_s3_config *config, char **ak, char **sk)
{
	*ak = *sk = NULL;
	if (config->access_key && *config->access_key && config->secret_key &&
	    *config->secret_key) {
		*ak = strdup(config->access_key);
		*sk = strdup(config->secret_key);
	} else if (!ms_s3_env_pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", ak, sk) &&
		   !ms_s3_env_pair("MEMSNAP_S3_ACCESS_KEY", "MEMSNAP_S3_SECRET_KEY", ak, sk)) {
		const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
		const char *profile = getenv("AWS_PROFILE");
		char *path = NULL;
		if (!file || !*file) {
			const char *home = getenv("HOME");
			if (!home || asprintf(&path, "%s/.aws/credentials", home) < 0)
				return -EINVAL;
			file = path;
		}
		int err = ms_s3_creds_file(file, profile && *profile ? profile : "default", ak, sk);
		free(path);
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
