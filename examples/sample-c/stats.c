#include <math.h>
#include <stdlib.h>
#include "stats.h"

double stats_mean(const vec *v) {
    double s = 0;
    for (size_t i = 0; i < v->len; i++) s += v->data[i];
    return v->len ? s / (double)v->len : 0.0;
}

double stats_stddev(const vec *v) {
    double m = stats_mean(v), s = 0;
    for (size_t i = 0; i < v->len; i++) s += (v->data[i] - m) * (v->data[i] - m);
    return v->len ? sqrt(s / (double)v->len) : 0.0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stats_median(vec *v) {
    if (!v->len) return 0.0;
    qsort(v->data, v->len, sizeof *v->data, cmp);
    return v->len % 2 ? v->data[v->len / 2]
                      : (v->data[v->len / 2 - 1] + v->data[v->len / 2]) / 2.0;
}
