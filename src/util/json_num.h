/* json_num.h - internal: JSON numbers that read back as the same double.
 * cJSON (1.7.15) prints a number with %1.15g whenever that reads back within one DBL_EPSILON
 * (relative) of the value, so a printed double can come back one unit in the last place off.
 * These helpers add the number as raw text: the shortest of %.15g, %.16g, %.17g that strtod
 * reads back as exactly the same double; non-finite values as null. */
#ifndef MPQ_UTIL_JSON_NUM_H
#define MPQ_UTIL_JSON_NUM_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "mpq/mpq.h"

/* A new item: the exact number, or null when v is not finite. NULL when out of memory. */
cJSON *mpq_json_number(double v);
/* Adds mpq_json_number(v) to object o under key; false when out of memory. */
bool mpq_json_add_number(cJSON *o, const char *key, double v);
/* mpq_json_exact_numbers (mpq.h) does this to every number of a tree. */

#endif /* MPQ_UTIL_JSON_NUM_H */
