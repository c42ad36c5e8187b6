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

static int ms_bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double ms_bench_median(const double *v, int n)
{
	double s[MS_BENCH_ROUNDS_MAX];
	if (n <= 0 || n > MS_BENCH_ROUNDS_MAX)
		abort(); /* a bench's own bug: its round counts are constants */
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), ms_bench_cmp);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* rounds: NULL, or the n paired rounds' ratios whose spread goes with the result. */
static void ms_bench_emit(const char *name, double value, const char *unit, const char *baseline,
			  double baseline_value, double ratio, const double *rounds, int n,
			  double goal)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddNumberToObject(o, "value", value);
	cJSON_AddStringToObject(o, "unit", unit);
	cJSON_AddStringToObject(o, "baseline", baseline);
	cJSON_AddNumberToObject(o, "baseline_value", baseline_value);
	cJSON_AddNumberToObject(o, "ratio", ratio);
	cJSON_AddNumberToObject(o, "goal", goal);
	if (rounds && n > 0) {
		double lo = rounds[0], hi = rounds[0];
		for (int i = 1; i < n; i++) {
			lo = rounds[i] < lo ? rounds[i] : lo;
			hi = rounds[i] > hi ? rounds[i] : hi;
		}
		cJSON_AddNumberToObject(o, "ratio_min", lo);
		cJSON_AddNumberToObject(o, "ratio_max", hi);
		cJSON_AddNumberToObject(o, "rounds", n);
	}
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
		      baseline_value != 0 ? value / baseline_value : 0, NULL, 0, goal);
}

void ms_bench_report_ratio(const char *name, double value, const char *unit, const char *baseline,
			   double baseline_value, double ratio, double goal)
{
	ms_bench_emit(name, value, unit, baseline, baseline_value, ratio, NULL, 0, goal);
}

void ms_bench_report_spread(const char *name, double value, const char *unit, const char *baseline,
			    double baseline_value, double ratio, const double *rounds, int n,
			    double goal)
{
	ms_bench_emit(name, value, unit, baseline, baseline_value, ratio, rounds, n, goal);
}
