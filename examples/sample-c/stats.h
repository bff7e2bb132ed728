#ifndef SAMPLE_STATS_H
#define SAMPLE_STATS_H
#include "vec.h"

double stats_mean(const vec *v);
double stats_stddev(const vec *v);
double stats_median(vec *v);
#endif
