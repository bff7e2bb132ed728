#ifndef SAMPLE_STRUTIL_H
#define SAMPLE_STRUTIL_H
#include <stddef.h>

size_t count_words(const char *s);
void reverse_in_place(char *s);
#endif
