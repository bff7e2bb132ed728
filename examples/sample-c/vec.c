#include <stdlib.h>
#include "vec.h"

void vec_init(vec *v) {
    v->data = NULL;
    v->len = 0;
    v->cap = 0;
}

int vec_push(vec *v, double x) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        double *d = realloc(v->data, cap * sizeof *d);
        if (!d) return -1;
        v->data = d;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 0;
}

void vec_free(vec *v) {
    free(v->data);
    vec_init(v);
}
