#ifndef SAMPLE_VEC_H
#define SAMPLE_VEC_H
#include <stddef.h>

typedef struct {
    double *data;
    size_t len;
    size_t cap;
} vec;

void vec_init(vec *v);
int vec_push(vec *v, double x);
void vec_free(vec *v);
#endif
