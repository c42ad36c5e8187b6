/* api_routes.c - prints the daemon's route table, "METHOD PATTERN" a line (test_openapi.sh). */
#include "node/api.h"

#include <stdio.h>

int main(void)
{
	for (const struct ms_api_route *r = ms_api_routes; r->method; r++)
		printf("%s %s\n", r->method, r->pattern);
	return 0;
}
