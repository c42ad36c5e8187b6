/*
 * s3_xml.h - the XML of S3's answers, read without an XML library, and the one body we send.
 *
 * Only what the s3 backend needs: the first <tag>value</tag> in a range (no attributes, no
 * namespaces, no CDATA), the five entities and numeric character references. Every
 * function takes a (pointer, length) buffer that needs no NUL, so a fuzz target
 * (fuzz/fuzz_s3_xml.c) can drive it with raw bytes; none reads outside [xml, xml + len).
 */
#ifndef MS_STORAGE_S3_XML_H
#define MS_STORAGE_S3_XML_H

#include "storage/store.h"

#include <stdbool.h>
#include <stddef.h>

#define MS_S3_ETAG_MAX 128

/* Finds the first <tag>value</tag> in [start, end); value bounds in *vs, *ve. false: absent. */
bool ms_s3_xml_find(const char *start, const char *end, const char *tag, const char **vs,
		    const char **ve);
/*
 * Decodes [s, e): entities and numeric references (as UTF-8) into a malloc'd string.
 * 0, MS_EPROTO (unknown entity, bad or out-of-range reference, an embedded NUL) or -ENOMEM.
 */
int ms_s3_xml_decode(const char *s, const char *e, char **out);

/* The <Code> of an <Error> body into code (cap bytes, cut to fit); "" when absent. */
void ms_s3_xml_error_code(const char *xml, size_t len, char *code, size_t cap);
/* The <UploadId> of an InitiateMultipartUploadResult, decoded. 0, MS_EPROTO or -ENOMEM. */
int ms_s3_xml_upload_id(const char *xml, size_t len, char **upload_id);
/* How many <tag> elements follow one another in the buffer (ListMultipartUploads' <Upload>). */
unsigned ms_s3_xml_count(const char *xml, size_t len, const char *tag);

/*
 * One ListObjectsV2 page: calls fn(key, size, mtime_ms, ctx) for each <Contents> in order
 * (mtime_ms from <LastModified>, 0 when it has none), with the
 * store's prefix (normalized, "" for none) and its '/' stripped from the key; a key outside
 * the prefix is MS_EPROTO. A non-zero return of fn stops the page: *stop = that value, 0
 * returned. *token: the decoded NextContinuationToken when <IsTruncated> is true, else NULL
 * (malloc'd, the caller frees). 0, MS_EPROTO (a <Contents> without <Key> or a decimal
 * <Size>, a truncated page without a token), -ENOMEM.
 */
int ms_s3_xml_list_page(const char *xml, size_t len, const char *prefix, ms_store_list_fn fn,
			void *ctx, int *stop, char **token);

/*
 * One ListMultipartUploads page: calls fn(key, upload_id, initiated_ms, ctx) for each
 * <Upload> (key with the store's prefix and its '/' stripped, as in ms_s3_xml_list_page;
 * initiated_ms from <Initiated>, 0 when it has none); a non-zero return of fn is returned.
 * When <IsTruncated> is true, *next_key and *next_upload_id get the decoded markers
 * (malloc'd, the caller frees), else NULL. 0, MS_EPROTO (an <Upload> without <Key> or
 * <UploadId>, a key outside the prefix, a truncated page without markers), -ENOMEM.
 */
typedef int (*ms_s3_upload_fn)(const char *key, const char *upload_id, int64_t initiated_ms,
			       void *ctx);
int ms_s3_xml_uploads_page(const char *xml, size_t len, const char *prefix, ms_s3_upload_fn fn,
			   void *ctx, char **next_key, char **next_upload_id);

/*
 * The CompleteMultipartUpload body for parts 1..parts with their ETags (escaped), into a
 * malloc'd *xml of *len bytes. 0 or -ENOMEM.
 */
int ms_s3_xml_complete_upload(char (*etags)[MS_S3_ETAG_MAX], size_t parts, char **xml, size_t *len);

#endif
