/* bench.c - appends one JSON object per result to $MEMSNAP_BENCH_OUT. */
#include "bench.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

double ms_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ms_bench_warm_memory(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return; /* only a warm-up: the measurement runs without it */
	if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0)
		memset(p, 1, bytes); /* before Linux 5.14 */
	munmap(p, bytes);
}

static void ms_bench_emit(const char *name, double value, const char *unit, const char *baseline,
			  double baseline_value, double ratio, double goal)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddNumberToObject(o, "value", value);
	cJSON_AddStringToObject(o, "unit", unit);
	cJSON_AddStringToObject(o, "baseline", baseline);
	cJSON_AddNumberToObject(o, "baseline_value", baseline_value);
	cJSON_AddNumberToObject(o, "ratio", ratio);
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

void ms_bench_report(const char *name, double value, const char *unit, const char *baseline,
		     double baseline_value, double goal)
{
	ms_bench_emit(name, value, unit, baseline, baseline_value,
		      baseline_value != 0 ? value / baseline_value : 0, goal);
}

void ms_bench_report_ratio(const char *name, double value, const char *unit, const char *baseline,
			   double baseline_value, double ratio, double goal)
{
	ms_bench_emit(name, value, unit, baseline, baseline_value, ratio, goal);
}
