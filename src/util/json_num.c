/* json_num.c - exact JSON numbers (json_num.h). */
#include "util/json_num.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shortest of %.15g, %.16g, %.17g that reads back as v (v finite). */
static void exact_text(char buf[40], double v) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break; /* %.17g always reads back exactly */
    }
}

cJSON *mpq_json_number(double v) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[40];
    exact_text(buf, v);
    return cJSON_CreateRaw(buf);
}

bool mpq_json_exact_numbers(cJSON *root) {
    for (cJSON *it = root; it; it = it->next) {
        if (cJSON_IsNumber(it)) {
            if (!isfinite(it->valuedouble)) {
                it->type = cJSON_NULL;
                continue;
            }
            char buf[40];
            exact_text(buf, it->valuedouble);
            size_t n = strlen(buf) + 1;
            char *raw = cJSON_malloc(n);
            if (!raw) return false;
            memcpy(raw, buf, n);
            it->valuestring = raw; /* a number item has no string; cJSON_Delete frees this one */
            it->type = cJSON_Raw;
        } else if ((cJSON_IsArray(it) || cJSON_IsObject(it)) && !mpq_json_exact_numbers(it->child)) {
            return false;
        }
    }
    return true;
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
