/* bench.c - appends one JSON object per result to $MEMSNAP_BENCH_OUT. */
#include "bench.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double ms_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ms_bench_report(const char *name, double value, const char *unit, const char *baseline,
		     double baseline_value, double goal)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddNumberToObject(o, "value", value);
	cJSON_AddStringToObject(o, "unit", unit);
	cJSON_AddStringToObject(o, "baseline", baseline);
	cJSON_AddNumberToObject(o, "baseline_value", baseline_value);
	cJSON_AddNumberToObject(o, "ratio", baseline_value != 0 ? value / baseline_value : 0);
	cJSON_AddNumberToObject(o, "goal", goal);
	char *text = cJSON_PrintUnformatted(o);
	const char *path = getenv("MEMSNAP_BENCH_OUT");
	FILE *out = path ? fopen(path, "a") : stdout;
	if (out && text) {
		fprintf(out, "%s\n", text);
		if (out != stdout)
			fclose(out);
	}
	free(text);
	cJSON_Delete(o);
}
