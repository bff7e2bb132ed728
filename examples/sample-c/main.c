#include <stdio.h>
#include "stats.h"
#include "strutil.h"

int main(void) {
    vec v;
    vec_init(&v);
    for (int i = 1; i <= 9; i++) vec_push(&v, (double)(i * i));
    char text[] = "distributed compilation on a grid";
    printf("mean=%.2f stddev=%.2f median=%.2f\n", stats_mean(&v), stats_stddev(&v), stats_median(&v));
    printf("words=%zu\n", count_words(text));
    reverse_in_place(text);
    printf("reversed=%s\n", text);
    vec_free(&v);
    return 0;
}
