/*
 * s3_xml.c - reads the XML S3 answers with (errors, multipart, listings) and writes the
 * CompleteMultipartUpload body; the limits of the reader are in s3_xml.h.
 *
 * Invariant: no function reads outside the [start, end) or (xml, len) it was given, and
 * every value taken from a body is decoded (and so checked) before it is used.
 */
#include "storage/s3_xml.h"
#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Finds <tag>value</tag> in [start, end); value bounds in *vs, *ve. false when absent. */
bool ms_s3_xml_find(const char *start, const char *end, const char *tag, const char **vs,
		    const char **ve)
{
	char open[80], close[80];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	size_t olen = strlen(open), clen = strlen(close);
	const char *p = start;
	while (p && (size_t)(end - p) >= olen) {
		p = memmem(p, (size_t)(end - p), open, olen);
		if (!p)
			return false;
		const char *v = p + olen;
		const char *c = memmem(v, (size_t)(end - v), close, clen);
		if (!c)
			return false;
		*vs = v;
		*ve = c;
		return true;
	}
	return false;
}

/* Decodes the five XML entities and numeric references; MS_EPROTO on anything else. */
int ms_s3_xml_decode(const char *s, const char *e, char **out)
{
	*out = NULL;
	char *d = malloc((size_t)(e - s) + 1);
	if (!d)
		return -ENOMEM;
	size_t n = 0;
	while (s < e) {
		if (*s != '&') {
			d[n++] = *s++;
			continue;
		}
		const char *semi = memchr(s, ';', (size_t)(e - s));
		if (!semi || semi - s > 12)
			goto out_bad;
		size_t len = (size_t)(semi - s - 1);
		const char *name = s + 1;
		unsigned long cp;
		if (len == 3 && !memcmp(name, "amp", 3))
			cp = '&';
		else if (len == 2 && !memcmp(name, "lt", 2))
			cp = '<';
		else if (len == 2 && !memcmp(name, "gt", 2))
			cp = '>';
		else if (len == 4 && !memcmp(name, "quot", 4))
			cp = '"';
		else if (len == 4 && !memcmp(name, "apos", 4))
			cp = '\'';
		else if (len >= 2 && name[0] == '#') {
			char num[12];
			memcpy(num, name + 1, len - 1);
			num[len - 1] = '\0';
			char *endp;
			bool hex = num[0] == 'x' || num[0] == 'X';
			errno = 0;
			cp = strtoul(hex ? num + 1 : num, &endp, hex ? 16 : 10);
			if (errno || *endp || endp == (hex ? num + 1 : num) || cp == 0 ||
			    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
				goto out_bad;
		} else {
			goto out_bad;
		}
		/* UTF-8 encode; the reference (>= 4 bytes) is longer than its encoding. */
		if (cp < 0x80) {
			d[n++] = (char)cp;
		} else if (cp < 0x800) {
			d[n++] = (char)(0xc0 | (cp >> 6));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			d[n++] = (char)(0xe0 | (cp >> 12));
			d[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		} else {
			d[n++] = (char)(0xf0 | (cp >> 18));
			d[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			d[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			d[n++] = (char)(0x80 | (cp & 0x3f));
		}
		s = semi + 1;
	}
	d[n] = '\0';
	if (strlen(d) != n)
		goto out_bad; /* an embedded NUL */
	*out = d;
	return 0;
out_bad:
	free(d);
	return MS_EPROTO;
}

void ms_s3_xml_error_code(const char *xml, size_t len, char *code, size_t cap)
{
	const char *vs, *ve;
	if (cap == 0)
		return;
	code[0] = '\0';
	if (!xml || !ms_s3_xml_find(xml, xml + len, "Code", &vs, &ve))
		return;
	size_t n = (size_t)(ve - vs);
	if (n >= cap)
		n = cap - 1;
	memcpy(code, vs, n);
	code[n] = '\0';
}

int ms_s3_xml_upload_id(const char *xml, size_t len, char **upload_id)
{
	const char *vs, *ve;
	*upload_id = NULL;
	if (!xml || !ms_s3_xml_find(xml, xml + len, "UploadId", &vs, &ve))
		return MS_EPROTO;
	int err = ms_s3_xml_decode(vs, ve, upload_id);
	if (!err && !**upload_id) {
		free(*upload_id);
		*upload_id = NULL;
		err = MS_EPROTO;
	}
	return err;
}

unsigned ms_s3_xml_count(const char *xml, size_t len, const char *tag)
{
	unsigned count = 0;
	const char *p = xml, *end = xml + len, *vs, *ve;
	while (xml && ms_s3_xml_find(p, end, tag, &vs, &ve)) {
		count++;
		p = ve;
	}
	return count;
}

/*
 * A <Contents>'s <LastModified> ("2026-12-02T00:50:45.000Z", ISO 8601 UTC) in
 * Unix ms; 0 when it is missing or not of that form (the age is then unknown,
 * which is no reason to refuse the listing).
 */
static int64_t ms_s3_xml_tag_time_ms(const char *vs, const char *ve, const char *tag)
{
	const char *ts, *te;
	if (!ms_s3_xml_find(vs, ve, tag, &ts, &te) || te - ts < 19 || te - ts > 40)
		return 0;
	char text[41];
	memcpy(text, ts, (size_t)(te - ts));
	text[te - ts] = '\0';
	struct tm tm = {0};
	unsigned ms = 0;
	int used = 0;
	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
		return 0;
	if (text[used] == '.') {
		unsigned scale = 100;
		for (const char *d = text + used + 1; *d >= '0' && *d <= '9'; d++, scale /= 10)
			ms += scale ? (unsigned)(*d - '0') * scale : 0;
	}
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	return t < 0 ? 0 : (int64_t)t * 1000 + ms;
}

static int64_t ms_s3_xml_time_ms(const char *vs, const char *ve)
{
	return ms_s3_xml_tag_time_ms(vs, ve, "LastModified");
}

int ms_s3_xml_uploads_page(const char *xml, size_t len, const char *prefix, ms_s3_upload_fn fn,
			   void *ctx, char **next_key, char **next_upload_id)
{
	const char *end = xml + len;
	const char *p = xml;
	const char *vs, *ve;
	size_t strip = *prefix ? strlen(prefix) + 1 : 0;
	*next_key = *next_upload_id = NULL;
	while (ms_s3_xml_find(p, end, "Upload", &vs, &ve)) {
		const char *ks, *ke, *is, *ie;
		if (!ms_s3_xml_find(vs, ve, "Key", &ks, &ke) ||
		    !ms_s3_xml_find(vs, ve, "UploadId", &is, &ie) || ie == is)
			return MS_EPROTO;
		char *key = NULL, *id = NULL;
		int err = ms_s3_xml_decode(ks, ke, &key);
		if (!err)
			err = ms_s3_xml_decode(is, ie, &id);
		if (!err && strip &&
		    (strlen(key) < strip || strncmp(key, prefix, strip - 1) != 0 ||
		     key[strip - 1] != '/'))
			err = MS_EPROTO; /* the server listed a key outside our prefix */
		if (!err)
			err = fn(key + strip, id, ms_s3_xml_tag_time_ms(vs, ve, "Initiated"), ctx);
		free(key);
		free(id);
		if (err)
			return err;
		p = ve;
	}
	if (ms_s3_xml_find(xml, end, "IsTruncated", &vs, &ve) && ve - vs == 4 &&
	    memcmp(vs, "true", 4) == 0) {
		const char *ks, *ke, *is, *ie;
		if (!ms_s3_xml_find(xml, end, "NextKeyMarker", &ks, &ke) || ke == ks ||
		    !ms_s3_xml_find(xml, end, "NextUploadIdMarker", &is, &ie))
			return MS_EPROTO;
		int err = ms_s3_xml_decode(ks, ke, next_key);
		if (!err && (err = ms_s3_xml_decode(is, ie, next_upload_id))) {
			free(*next_key);
			*next_key = NULL;
		}
		return err;
	}
	return 0;
}

int ms_s3_xml_list_page(const char *xml, size_t len, const char *prefix, ms_store_list_fn fn,
			void *ctx, int *stop, char **token)
{
	const char *end = xml + len;
	const char *p = xml;
	const char *vs, *ve;
	size_t strip = *prefix ? strlen(prefix) + 1 : 0;
	*token = NULL;
	while (ms_s3_xml_find(p, end, "Contents", &vs, &ve)) {
		const char *ks, *ke, *ss, *se;
		if (!ms_s3_xml_find(vs, ve, "Key", &ks, &ke) ||
		    !ms_s3_xml_find(vs, ve, "Size", &ss, &se) || se - ss == 0 || se - ss > 20)
			return MS_EPROTO;
		char num[24];
		memcpy(num, ss, (size_t)(se - ss));
		num[se - ss] = '\0';
		char *endp;
		errno = 0;
		unsigned long long size = strtoull(num, &endp, 10);
		if (errno || *endp || num[0] == '-')
			return MS_EPROTO;
		char *key;
		int err = ms_s3_xml_decode(ks, ke, &key);
		if (err)
			return err;
		if (strip && (strlen(key) < strip || strncmp(key, prefix, strip - 1) != 0 ||
			      key[strip - 1] != '/')) {
			free(key);
			return MS_EPROTO; /* the server listed a key outside our prefix */
		}
		int rc = fn(key + strip, (uint64_t)size, ms_s3_xml_time_ms(vs, ve), ctx);
		free(key);
		if (rc) {
			*stop = rc;
			return 0;
		}
		p = ve;
	}
	if (ms_s3_xml_find(xml, end, "IsTruncated", &vs, &ve) && ve - vs == 4 &&
	    memcmp(vs, "true", 4) == 0) {
		if (!ms_s3_xml_find(xml, end, "NextContinuationToken", &vs, &ve) || ve == vs)
			return MS_EPROTO;
		return ms_s3_xml_decode(vs, ve, token);
	}
	return 0;
}

int ms_s3_xml_complete_upload(char (*etags)[MS_S3_ETAG_MAX], size_t parts, char **xml, size_t *len)
{
	*xml = NULL;
	*len = 0;
	FILE *f = open_memstream(xml, len);
	if (!f)
		return -ENOMEM;
	fputs("<CompleteMultipartUpload>", f);
	for (size_t i = 0; i < parts; i++) {
		fprintf(f, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
		for (const char *e = etags[i]; *e; e++) {
			if (*e == '&')
				fputs("&amp;", f);
			else if (*e == '<')
				fputs("&lt;", f);
			else if (*e == '"')
				fputs("&quot;", f);
			else
				fputc(*e, f);
		}
		fputs("</ETag></Part>", f);
	}
	fputs("</CompleteMultipartUpload>", f);
	bool bad = ferror(f);
	if (fclose(f) != 0 || bad || !*xml) {
		free(*xml);
		*xml = NULL;
		*len = 0;
		return -ENOMEM;
	}
	return 0;
}
