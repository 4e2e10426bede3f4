/*
 * json_check.c - test helper for the e2e scripts: reads one JSON document from stdin, fails
 * unless it parses (cJSON, nothing but whitespace after the value), then prints the value
 * at each PATH argument on its own line. A PATH is member names and array indices joined by
 * '.', e.g. "model", "kv_scheme.mode", "layers.0.name". Strings are printed raw (unescaped),
 * numbers exactly (%.15g, or %.17g when needed), and null / true / false as such.
 * Exit codes: 0 ok, 1 not valid JSON (or unreadable input), 2 a PATH is missing.
 * Built only with the tests, beside the mpq binary (build/mpq_json_check); it exists so the
 * e2e tests need neither python3 nor jq, neither of which is on a minimal Debian 12.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cJSON *lookup(const cJSON *j, const char *path) {
    char buf[512];
    if (strlen(path) >= sizeof buf) return NULL;
    strcpy(buf, path);
    for (char *tok = strtok(buf, "."); j && tok; tok = strtok(NULL, ".")) {
        if (cJSON_IsArray(j)) {
            char *end = NULL;
            long i = strtol(tok, &end, 10);
            j = (*end == '\0' && i >= 0 && i <= 0x7fffffffL) ? cJSON_GetArrayItem(j, (int)i) : NULL;
        } else {
            j = cJSON_GetObjectItemCaseSensitive(j, tok);
        }
    }
    return j;
}

int main(int argc, char **argv) {
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (size_t r; text && (r = fread(text + n, 1, cap - 1 - n, stdin)) > 0;) {
        n += r;
        if (n == cap - 1) {
            char *t = realloc(text, cap * 2);
            if (!t) free(text);
            text = t;
            cap *= 2;
        }
    }
    if (!text || ferror(stdin)) {
        fprintf(stderr, "json_check: cannot read stdin\n");
        free(text);
        return 1;
    }
    text[n] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    if (!j || strlen(text) != n) {
        size_t at = end ? (size_t)(end - text) : 0;
        fprintf(stderr, "json_check: not valid JSON at byte %zu of %zu: %.40s\n", at, n, end ? end : "");
        cJSON_Delete(j);
        free(text);
        return 1;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const cJSON *v = lookup(j, argv[i]);
        if (!v) {
            fprintf(stderr, "json_check: no value at '%s'\n", argv[i]);
            rc = 2;
        } else if (cJSON_IsString(v)) {
            printf("%s\n", v->valuestring);
        } else if (cJSON_IsNumber(v)) {
            char num[32]; /* shortest of %.15g / %.17g that reads back exactly */
            snprintf(num, sizeof num, "%.15g", v->valuedouble);
            if (strtod(num, NULL) != v->valuedouble) snprintf(num, sizeof num, "%.17g", v->valuedouble);
            printf("%s\n", num);
        } else if (cJSON_IsNull(v)) {
            printf("null\n");
        } else if (cJSON_IsBool(v)) {
            printf("%s\n", cJSON_IsTrue(v) ? "true" : "false");
        } else {
            char *s = cJSON_PrintUnformatted(v);
            printf("%s\n", s ? s : "?");
            cJSON_free(s);
        }
    }
    cJSON_Delete(j);
    free(text);
    return rc;
}
