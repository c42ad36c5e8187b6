/* nofork.c - buffers left out of every fork (see nofork.h). */
#include "util/nofork.h"

#include <sys/mman.h>

void *ms_nofork_alloc(size_t len)
{
	void *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return NULL;
	(void)madvise(buf, len, MADV_DONTFORK); /* only an optimization: a child shares it */
	return buf;
}

void ms_nofork_free(void *buf, size_t len)
{
	if (buf)
		munmap(buf, len);
}
