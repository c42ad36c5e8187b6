/*
 * growbuf.h - a byte buffer that grows up to a cap, always NUL-terminated: the sink of
 * an HTTP answer (libcurl's write callback) for the CLI's client and the S3 credential
 * endpoints. Zero-initialize it; free(data) when done.
 */
#ifndef MS_UTIL_GROWBUF_H
#define MS_UTIL_GROWBUF_H

#include <stdbool.h>
#include <stddef.h>

struct ms_growbuf {
	char *data; /* malloc'd, NUL-terminated (NULL while empty) */
	size_t len;
	size_t cap;   /* the most bytes it takes; 0: no limit */
	bool too_big; /* an append went past cap (nothing of it was taken) */
};

/* Appends len bytes. false (nothing taken): past cap (too_big set) or out of memory. */
bool ms_growbuf_append(struct ms_growbuf *b, const void *data, size_t len);
/* libcurl CURLOPT_WRITEFUNCTION with CURLOPT_WRITEDATA = a struct ms_growbuf *. */
size_t ms_growbuf_curl_write(char *ptr, size_t size, size_t nmemb, void *userdata);

#endif
