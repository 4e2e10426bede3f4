/* json_num.c - exact JSON numbers (json_num.h). */
#include "util/json_num.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

cJSON *mpq_json_number(double v) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break; /* %.17g always reads back exactly */
    }
    return cJSON_CreateRaw(buf);
}

bool mpq_json_add_number(cJSON *o, const char *key, double v) {
    cJSON *n = mpq_json_number(v);
    if (!n) return false;
    if (!cJSON_AddItemToObject(o, key, n)) {
        cJSON_Delete(n);
        return false;
    }
    return true;
}
