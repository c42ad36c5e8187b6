/*
 * s3_provider.c - where the s3 backend's signing key comes from, and its refresh.
 *
 * Sources, the first that applies (all inputs come in struct ms_s3_config):
 *   static        an access key pair, with a session token for temporary credentials
 *                 (ms_s3_credentials(): the config's, else the AWS files it names)
 *   web identity  web_identity_token_file + role_arn: STS AssumeRoleWithWebIdentity at
 *                 sts_endpoint (an unsigned POST; the token file is read again each time)
 *   imds          the instance metadata service v2 at imds_endpoint: PUT
 *                 /latest/api/token, then the role's credentials under
 *                 /latest/meta-data/iam/security-credentials/
 * Temporary credentials (web identity, imds) carry an Expiration. A request takes a copy
 * of the key (ms_s3_provider_get); once now >= Expiration - margin, the first request to
 * notice fetches new ones while the others go on with the old ones; a failed fetch is
 * logged, keeps the old key until it expires, and is tried again after a pause (a
 * quarter of the margin, 100 ms to 30 s). After expiry without a refresh, requests fail
 * with -EKEYEXPIRED.
 *
 * Invariants:
 *  1. key, refreshing, retry_at_ns and the counts are guarded by lock; the inputs are
 *     immutable.
 *  2. At most one fetch runs at a time (refreshing), never under lock.
 *  3. No secret, token or response body is logged (s3_int.h inv. 3).
 */
#include "storage/s3_int.h"
#include "util/err.h"
#include "util/growbuf.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS_MOD		      "s3"
#define MS_S3_DEFAULT_STS     "https://sts.amazonaws.com"
#define MS_S3_DEFAULT_IMDS    "http://169.254.169.254"
#define MS_S3_DEFAULT_MARGIN  300 /* s: refresh five minutes before expiry */
#define MS_S3_PROVIDER_BODY   (64 * 1024)
#define MS_S3_WEB_TOKEN_MAX   (16 * 1024)
#define MS_S3_IMDS_TTL_HEADER "X-aws-ec2-metadata-token-ttl-seconds: 21600"

const char *ms_s3_source_name(enum ms_s3_source source)
{
	static const char *const names[] = {[MS_S3_SOURCE_STATIC] = "static",
					    [MS_S3_SOURCE_WEB_IDENTITY] = "web identity",
					    [MS_S3_SOURCE_IMDS] = "instance metadata"};
	return (unsigned)source <= MS_S3_SOURCE_IMDS ? names[source] : "unknown";
}

/* ---- small HTTP exchanges (STS, IMDS) ---- */

/*
 * One request: method to url with the given header lines (NULL-terminated) and an
 * optional body; *status and the body (malloc'd, NUL-terminated, caller frees) back.
 * 0 or a negative errno (transport failure).
 */
static int ms_s3_exchange(const struct ms_s3_provider *p, const char *method, const char *url,
			  const char *const *headers, const char *body, long *status, char **out)
{
	*out = NULL;
	*status = 0;
	CURL *easy = curl_easy_init();
	if (!easy)
		return -ENOMEM;
	struct curl_slist *hdrs = NULL;
	int err = 0;
	for (; headers && *headers && !err; headers++) {
		struct curl_slist *next = curl_slist_append(hdrs, *headers);
		if (!next)
			err = -ENOMEM;
		else
			hdrs = next;
	}
	struct ms_growbuf b = {.cap = MS_S3_PROVIDER_BODY};
	if (!err) {
		curl_easy_setopt(easy, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
		curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, p->timeout_ms);
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, p->timeout_ms);
		curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ms_growbuf_curl_write);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
		if (!strcmp(method, "GET")) {
			curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
		} else {
			curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body ? body : "");
			curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
					 (long)(body ? strlen(body) : 0));
			curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
		}
		CURLcode rc = curl_easy_perform(easy);
		if (rc != CURLE_OK)
			err = b.too_big			       ? -E2BIG
			      : rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
							       : -EIO;
		else
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, status);
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(easy);
	if (err) {
		free(b.data);
		return err;
	}
	*out = b.data ? b.data : strdup("");
	return *out ? 0 : -ENOMEM;
}

/* "2026-12-02T01:00:00Z" (fractions allowed) as Unix seconds; -1 when malformed. */
static int64_t ms_s3_parse_expiration(const char *s)
{
	struct tm tm = {0};
	int n = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
	    n < 19)
		return -1;
	const char *rest = s + n;
	if (*rest == '.')
		for (rest++; *rest >= '0' && *rest <= '9'; rest++)
			;
	if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	return t == (time_t)-1 ? -1 : (int64_t)t;
}

/* Copies the four values into key; -E2BIG when one does not fit, -EPROTO when one is empty. */
static int ms_s3_key_fill(struct ms_s3_key *key, const char *ak, const char *sk, const char *token,
			  const char *expiration)
{
	if (!ak || !*ak || !sk || !*sk || !token || !*token || !expiration)
		return MS_EPROTO;
	if (strlen(ak) >= sizeof(key->access_key) || strlen(sk) >= sizeof(key->secret_key) ||
	    strlen(token) >= sizeof(key->token))
		return -E2BIG;
	int64_t expires = ms_s3_parse_expiration(expiration);
	if (expires < 0)
		return MS_EPROTO;
	strcpy(key->access_key, ak);
	strcpy(key->secret_key, sk);
	strcpy(key->token, token);
	key->expires = expires;
	return 0;
}

/* ---- web identity: STS AssumeRoleWithWebIdentity ---- */

/* The decoded text of <tag> inside [s, e) (malloc'd) or NULL. */
static char *ms_s3_xml_text(const char *s, const char *e, const char *tag)
{
	const char *vs, *ve;
	char *out = NULL;
	if (!ms_s3_xml_find(s, e, tag, &vs, &ve) || ms_s3_xml_decode(vs, ve, &out))
		return NULL;
	return out;
}

static int ms_s3_read_token_file(const char *path, char **out)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	char *buf = malloc(MS_S3_WEB_TOKEN_MAX + 1);
	size_t n = buf ? fread(buf, 1, MS_S3_WEB_TOKEN_MAX + 1, f) : 0;
	fclose(f);
	if (!buf)
		return -ENOMEM;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	if (n == 0 || n > MS_S3_WEB_TOKEN_MAX) {
		free(buf);
		return n ? -E2BIG : -ENODATA;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

static int ms_s3_fetch_web_identity(const struct ms_s3_provider *p, struct ms_s3_key *key)
{
	char *token = NULL, *e_token = NULL, *e_role = NULL, *e_name = NULL, *body = NULL;
	char *resp = NULL;
	int err = ms_s3_read_token_file(p->token_file, &token);
	if (err) {
		ms_warn(MS_MOD, "web identity token file %s: %s", p->token_file, ms_strerror(err));
		return err;
	}
	if ((err = ms_sigv4_uri_encode(token, false, &e_token)) ||
	    (err = ms_sigv4_uri_encode(p->role_arn, false, &e_role)) ||
	    (err = ms_sigv4_uri_encode(p->session_name, false, &e_name)))
		goto out;
	if (asprintf(&body,
		     "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=%s"
		     "&RoleSessionName=%s&WebIdentityToken=%s",
		     e_role, e_name, e_token) < 0) {
		body = NULL;
		err = -ENOMEM;
		goto out;
	}
	static const char *const headers[] = {
	    "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
	    "Accept: application/xml", "Expect:", NULL};
	long status;
	if ((err = ms_s3_exchange(p, "POST", p->sts_endpoint, headers, body, &status, &resp)))
		goto out;
	const char *end = resp + strlen(resp), *cs, *ce;
	if (status != 200) {
		char code[64];
		ms_s3_xml_error_code(resp, strlen(resp), code, sizeof(code));
		ms_warn(MS_MOD, "STS AssumeRoleWithWebIdentity at %s: HTTP %ld %s", p->sts_endpoint,
			status, code);
		err = status == 403 || status == 400 ? -EACCES : -EIO;
		goto out;
	}
	if (!ms_s3_xml_find(resp, end, "Credentials", &cs, &ce)) {
		err = MS_EPROTO;
		goto out;
	}
	char *ak = ms_s3_xml_text(cs, ce, "AccessKeyId");
	char *sk = ms_s3_xml_text(cs, ce, "SecretAccessKey");
	char *st = ms_s3_xml_text(cs, ce, "SessionToken");
	char *ex = ms_s3_xml_text(cs, ce, "Expiration");
	err = ms_s3_key_fill(key, ak, sk, st, ex);
	if (sk)
		memset(sk, 0, strlen(sk));
	free(ak);
	free(sk);
	free(st);
	free(ex);
out:
	if (token)
		memset(token, 0, strlen(token));
	free(token);
	if (e_token)
		memset(e_token, 0, strlen(e_token));
	free(e_token);
	free(e_role);
	free(e_name);
	if (body) /* it holds the web identity token */
		memset(body, 0, strlen(body));
	free(body);
	if (resp) /* and this the secret key */
		memset(resp, 0, strlen(resp));
	free(resp);
	return err;
}

/* ---- the instance metadata service, v2 ---- */

static int ms_s3_imds_get(const struct ms_s3_provider *p, const char *session, const char *path,
			  char **out)
{
	char *url = NULL, *auth = NULL;
	if (asprintf(&url, "%s%s", p->imds_endpoint, path) < 0)
		return -ENOMEM;
	if (asprintf(&auth, "X-aws-ec2-metadata-token: %s", session) < 0) {
		free(url);
		return -ENOMEM;
	}
	const char *headers[] = {auth, NULL};
	long status;
	int err = ms_s3_exchange(p, "GET", url, headers, NULL, &status, out);
	if (!err && status != 200) {
		ms_warn(MS_MOD, "instance metadata %s: HTTP %ld", path, status);
		free(*out);
		*out = NULL;
		err = status == 401 || status == 403 ? -EACCES : status == 404 ? -ENOENT : -EIO;
	}
	free(url);
	free(auth);
	return err;
}

static int ms_s3_fetch_imds(const struct ms_s3_provider *p, struct ms_s3_key *key)
{
	char *url = NULL, *session = NULL, *roles = NULL, *path = NULL, *doc = NULL;
	if (asprintf(&url, "%s/latest/api/token", p->imds_endpoint) < 0)
		return -ENOMEM;
	static const char *const headers[] = {MS_S3_IMDS_TTL_HEADER, NULL};
	long status;
	int err = ms_s3_exchange(p, "PUT", url, headers, NULL, &status, &session);
	free(url);
	if (err) {
		ms_warn(MS_MOD, "instance metadata at %s: %s", p->imds_endpoint, ms_strerror(err));
		return err;
	}
	if (status != 200 || !*session) {
		ms_warn(MS_MOD, "instance metadata session token: HTTP %ld", status);
		err = -EACCES;
		goto out;
	}
	session[strcspn(session, "\r\n")] = '\0';
	if ((err =
		 ms_s3_imds_get(p, session, "/latest/meta-data/iam/security-credentials/", &roles)))
		goto out;
	roles[strcspn(roles, "\r\n")] = '\0'; /* the first role */
	if (!*roles || strchr(roles, '/')) {
		err = -ENOENT;
		goto out;
	}
	if (asprintf(&path, "/latest/meta-data/iam/security-credentials/%s", roles) < 0) {
		path = NULL;
		err = -ENOMEM;
		goto out;
	}
	if ((err = ms_s3_imds_get(p, session, path, &doc)))
		goto out;
	cJSON *o = cJSON_Parse(doc);
	const char *code = cJSON_GetStringValue(cJSON_GetObjectItem(o, "Code"));
	if (!o || (code && strcmp(code, "Success") != 0)) {
		err = o ? -EACCES : MS_EPROTO;
	} else {
		err =
		    ms_s3_key_fill(key, cJSON_GetStringValue(cJSON_GetObjectItem(o, "AccessKeyId")),
				   cJSON_GetStringValue(cJSON_GetObjectItem(o, "SecretAccessKey")),
				   cJSON_GetStringValue(cJSON_GetObjectItem(o, "Token")),
				   cJSON_GetStringValue(cJSON_GetObjectItem(o, "Expiration")));
	}
	cJSON_Delete(o);
out:
	if (doc)
		memset(doc, 0, strlen(doc));
	free(session);
	free(roles);
	free(path);
	free(doc);
	return err;
}

static int ms_s3_fetch(const struct ms_s3_provider *p, struct ms_s3_key *key)
{
	memset(key, 0, sizeof(*key));
	return p->source == MS_S3_SOURCE_WEB_IDENTITY ? ms_s3_fetch_web_identity(p, key)
						      : ms_s3_fetch_imds(p, key);
}

/* ---- the provider ---- */

static char *ms_s3_dup_or(const char *s, const char *fallback)
{
	return strdup(s && *s ? s : fallback);
}

int ms_s3_provider_init(struct ms_s3_provider *p, const struct ms_s3_config *config)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->timeout_ms =
	    config->timeout_ms > 0 && config->timeout_ms < 10000 ? config->timeout_ms : 10000;
	p->margin_s = config->refresh_margin_ns > 0 ? config->refresh_margin_ns / 1000000000
						    : MS_S3_DEFAULT_MARGIN;
	char *ak = NULL, *sk = NULL, *token = NULL;
	int err = ms_s3_credentials(config, &ak, &sk, &token);
	if (!err) {
		p->source = MS_S3_SOURCE_STATIC;
		if (strlen(ak) >= sizeof(p->key.access_key) ||
		    strlen(sk) >= sizeof(p->key.secret_key) ||
		    (token && strlen(token) >= sizeof(p->key.token)))
			err = -E2BIG;
		else {
			strcpy(p->key.access_key, ak);
			strcpy(p->key.secret_key, sk);
			strcpy(p->key.token, token ? token : "");
		}
		memset(sk, 0, strlen(sk));
		free(ak);
		free(sk);
		free(token);
		return err;
	}
	if (err != -EINVAL)
		return err;
	if (config->web_identity_token_file && *config->web_identity_token_file &&
	    config->role_arn && *config->role_arn) {
		p->source = MS_S3_SOURCE_WEB_IDENTITY;
		p->token_file = strdup(config->web_identity_token_file);
		p->role_arn = strdup(config->role_arn);
		p->session_name = ms_s3_dup_or(config->role_session_name, "memsnap");
		p->sts_endpoint = ms_s3_dup_or(config->sts_endpoint, MS_S3_DEFAULT_STS);
		if (!p->token_file || !p->role_arn || !p->session_name || !p->sts_endpoint)
			return -ENOMEM;
	} else if (config->imds) {
		p->source = MS_S3_SOURCE_IMDS;
		if (!(p->imds_endpoint = ms_s3_dup_or(config->imds_endpoint, MS_S3_DEFAULT_IMDS)))
			return -ENOMEM;
		size_t n = strlen(p->imds_endpoint);
		if (n && p->imds_endpoint[n - 1] == '/')
			p->imds_endpoint[n - 1] = '\0';
	} else {
		return -EINVAL;
	}
	/* the first key: a start without one fails (nothing to keep yet) */
	if ((err = ms_s3_fetch(p, &p->key))) {
		ms_err(MS_MOD, "%s credentials: %s", ms_s3_source_name(p->source),
		       ms_strerror(err));
		return err;
	}
	ms_info(MS_MOD, "%s credentials, valid for %lld s", ms_s3_source_name(p->source),
		(long long)(p->key.expires - (int64_t)time(NULL)));
	return 0;
}

/* CLOCK_REALTIME in ns: expirations are wall-clock times */
static int64_t ms_s3_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool ms_s3_expired(const struct ms_s3_key *key, int64_t now_ns, int64_t margin_ns)
{
	return key->expires && now_ns >= key->expires * 1000000000LL - margin_ns;
}

int ms_s3_provider_get(struct ms_s3_provider *p, struct ms_s3_key *out)
{
	pthread_mutex_lock(&p->lock);
	int64_t now = ms_s3_now_ns(), margin = p->margin_s * 1000000000LL;
	if (!p->refreshing && ms_s3_expired(&p->key, now, margin) && now >= p->retry_at_ns) {
		p->refreshing = true;
		pthread_mutex_unlock(&p->lock);
		struct ms_s3_key *fresh = malloc(sizeof(*fresh));
		int err = fresh ? ms_s3_fetch(p, fresh) : -ENOMEM;
		pthread_mutex_lock(&p->lock);
		now = ms_s3_now_ns();
		long long left = p->key.expires - now / 1000000000LL;
		if (!err) {
			p->key = *fresh;
			p->refreshes++;
			ms_info(MS_MOD, "%s credentials refreshed, valid for %lld s",
				ms_s3_source_name(p->source),
				(long long)(p->key.expires - now / 1000000000LL));
		} else {
			/* the next try after a pause: a quarter of the margin, 100 ms to 30 s */
			int64_t pause = margin / 4;
			pause = pause < 100000000LL ? 100000000LL : pause;
			pause = pause > 30000000000LL ? 30000000000LL : pause;
			p->retry_at_ns = now + pause;
			p->refresh_failures++;
			ms_warn(MS_MOD,
				"%s credentials: refresh failed (%s); the current ones are kept "
				"until they expire in %lld s",
				ms_s3_source_name(p->source), ms_strerror(err),
				left > 0 ? left : 0);
		}
		if (fresh)
			memset(fresh, 0, sizeof(*fresh));
		free(fresh);
		p->refreshing = false;
		pthread_cond_broadcast(&p->cond);
	}
	/* expired while another thread fetches: wait for its answer */
	while (p->refreshing && ms_s3_expired(&p->key, now, 0)) {
		pthread_cond_wait(&p->cond, &p->lock);
		now = ms_s3_now_ns();
	}
	int err = 0;
	if (ms_s3_expired(&p->key, now, 0))
		err = -EKEYEXPIRED;
	else
		*out = p->key;
	pthread_mutex_unlock(&p->lock);
	return err;
}

void ms_s3_provider_fini(struct ms_s3_provider *p)
{
	memset(&p->key, 0, sizeof(p->key));
	free(p->token_file);
	free(p->role_arn);
	free(p->session_name);
	free(p->sts_endpoint);
	free(p->imds_endpoint);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
}
