/*
 * endpoint: the app-server endpoint, PUT /update/<token> (SPEC §7).
 *
 * endpoint_begin() sees the request head: method, token, Content-Length, Transfer-Encoding;
 * it answers at once what needs no body (405, 411, 400, 413, 404) and otherwise waits for the
 * body, which http.c feeds through endpoint_body(). endpoint_finish() parses the version and
 * data from the form body or the query string, submits the update to the store, and answers
 * from the store's completion: 200 when the update reached a connected device, 202 when it
 * was stored for later, 410, 503 or 500 otherwise.
 *
 * The form parser is a pure function, exposed for the unit tests and the fuzzer.
 * Loop thread only.
 */
#ifndef SIMPLEPUSHD_ENDPOINT_H
#define SIMPLEPUSHD_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_txn;

/* A form field found by endpoint_form_get(). */
struct endpoint_field {
    bool present;
    char *value; /* decoded, NUL-terminated, malloc'd; NULL when absent */
    size_t len;
};

/*
 * Finds the first field "name" in an application/x-www-form-urlencoded text (not
 * NUL-terminated), decoding '+' and %XX. A malformed escape is kept literally. Returns 0,
 * or -1 on allocation failure. The caller frees field->value.
 */
int endpoint_form_get(const char *form, size_t len, const char *name, struct endpoint_field *field);

/*
 * Parses a version: base-10 digits only, 0 .. 2^63-1. Returns 0, or -1.
 */
int endpoint_parse_version(const char *s, size_t len, int64_t *version);

/* Handles the head of a request to /update/...; path is what follows "/update". */
int endpoint_begin(struct http_txn *txn, const char *path, size_t path_len);

/* Handles the complete request (body read); also called at once for an empty body. */
int endpoint_finish(struct http_txn *txn);

#endif
