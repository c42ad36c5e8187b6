/* growbuf.c - see growbuf.h. */
#include "util/growbuf.h"

#include <stdlib.h>
#include <string.h>

bool ms_growbuf_append(struct ms_growbuf *b, const void *data, size_t len)
{
	if (b->cap && b->len + len > b->cap) {
		b->too_big = true;
		return false;
	}
	char *grown = realloc(b->data, b->len + len + 1);
	if (!grown)
		return false;
	memcpy(grown + b->len, data, len);
	b->data = grown;
	b->len += len;
	b->data[b->len] = '\0';
	return true;
}

size_t ms_growbuf_curl_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	size_t n = size * nmemb;
	return ms_growbuf_append(userdata, ptr, n) ? n : 0;
}
