/*
 * endpoint: PUT /update/<token>, from the request head to the store's completion.
 *
 * Checks run cheapest first and before any storage access: method (405), chunked body
 * (411), Content-Length (400, 413), token (404, one answer for every kind of bad token).
 * Then the body is read (at most 3 x max_data_len + 1024 bytes), the version and data are
 * taken from it or from the query string (the body wins), and the update is stored. The
 * answer waits for the store, and for routing: 200 when a device on this node took the
 * update, or the node its host record names delivered it; 202 when it was stored for the
 * device's next hello.
 */
#include "simplepushd/endpoint.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "simplepushd/config.h"
#include "simplepushd/device.h"
#include "simplepushd/http.h"
#include "simplepushd/log.h"
#include "simplepushd/metrics.h"
#include "simplepushd/registry.h"
#include "simplepushd/router.h"
#include "simplepushd/server.h"
#include "simplepushd/store.h"
#include "simplepushd/token.h"

/* Seconds an app server should wait before retrying while storage is unavailable. */
#define ENDPOINT_RETRY_AFTER 5

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes the form character at s[*i] ('+' and %XX) and moves *i past it. */
static char form_next(const char *s, size_t len, size_t *i)
{
    size_t k = *i;
    if (s[k] == '+') {
        *i = k + 1;
        return ' ';
    }
    if (s[k] == '%' && k + 2 < len && hexval((unsigned char)s[k + 1]) >= 0 &&
        hexval((unsigned char)s[k + 2]) >= 0) {
        *i = k + 3;
        return (char)(hexval((unsigned char)s[k + 1]) * 16 + hexval((unsigned char)s[k + 2]));
    }
    *i = k + 1;
    return s[k];
}

/* Decodes s[0..len) ('+' and %XX) into a malloc'd NUL-terminated string. */
static char *form_decode(const char *s, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;)
        out[o++] = form_next(s, len, &i);
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* Whether s[0..len), decoded, is name[0..nlen) (no allocation: every pair's key is tried). */
static bool form_key_is(const char *s, size_t len, const char *name, size_t nlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; o++)
        if (o >= nlen || form_next(s, len, &i) != name[o])
            return false;
    return o == nlen;
}

int endpoint_form_get(const char *form, size_t len, const char *name, struct endpoint_field *field)
{
    size_t nlen = strlen(name);
    memset(field, 0, sizeof(*field));
    const char *p = form, *end = form + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq ? eq : pair_end;
        if (form_key_is(p, (size_t)(key_end - p), name, nlen)) {
            const char *v = eq ? eq + 1 : pair_end;
            field->value = form_decode(v, (size_t)(pair_end - v), &field->len);
            if (!field->value)
                return -1;
            field->present = true;
            return 0;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}

int endpoint_parse_version(const char *s, size_t len, int64_t *version)
{
    if (len == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        /* Checked per digit rather than by length, so that leading zeros are never too long. */
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *version = (int64_t)v;
    return 0;
}

/* True when s[0..len) is well-formed UTF-8 without NUL bytes. */
static bool valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static size_t body_cap(void)
{
    return 3 * (size_t)server_self->cfg->endpoint_max_data_len + 1024;
}

int endpoint_begin(struct http_txn *txn, const char *path, size_t path_len)
{
    struct lws *wsi = txn->wsi;
    const struct config *cfg = server_self->cfg;
    char cl[32];

    txn->cors = cfg->endpoint_cors;
    txn->is_put = lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0;

    /* A body we will not read must not be taken for the next request: close after. */
    /* A Content-Length header with an empty value is present (a fragment), and malformed. */
    bool has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
                  lws_hdr_copy_fragment(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH, 0) >= 0;
    bool has_te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;

    if (!lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI)) {
        if (has_cl || has_te)
            txn->close_after = true;
        if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) && cfg->endpoint_cors)
            return http_respond(txn, 200, "{}");
        txn->allow = "PUT";
        return http_respond_error(txn, 405, "Method Not Allowed");
    }
    if (has_te) {
        txn->close_after = true;
        return http_respond_error(txn, 411, "Length Required");
    }

    size_t length = 0;
    if (has_cl) {
        int n = lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
        int64_t v;
        if (n <= 0 || endpoint_parse_version(cl, (size_t)n, &v)) {
            txn->close_after = true;
            return http_respond_error(txn, 400, "Invalid Content-Length");
        }
        if ((uint64_t)v > body_cap()) {
            txn->close_after = true;
            return http_respond_error(txn, 413, "Request Entity Too Large");
        }
        length = (size_t)v;
    } else {
        /* lws expects a body of unknown length after a PUT without Content-Length. */
        txn->close_after = true;
    }

    /* The token: exactly one path segment after /update/. */
    uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
    struct ids_spelling sp;
    if (path_len < 2 || path[0] != '/' || memchr(path + 1, '/', path_len - 1) ||
        token_decode(server_self->tokens, path + 1, path_len - 1, uaid, chid, &sp)) {
        if (length)
            txn->close_after = true;
        return http_respond_error(txn, 404, "Invalid Token");
    }
    txn->token = strndup(path + 1, path_len - 1);
    if (!txn->token)
        return -1;

    if (length == 0)
        return endpoint_finish(txn);
    txn->body = malloc(length);
    if (!txn->body)
        return -1;
    txn->body_expected = length;
    return 0;
}

/* Is the request body a form? (Content-Type absent or application/x-www-form-urlencoded) */
static bool body_is_form(struct lws *wsi)
{
    char ct[128];
    static const char form[] = "application/x-www-form-urlencoded";
    int n = lws_hdr_copy(wsi, ct, sizeof(ct), WSI_TOKEN_HTTP_CONTENT_TYPE);
    if (n <= 0)
        return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE) == 0;
    if (strncasecmp(ct, form, sizeof(form) - 1))
        return false;
    char next = ct[sizeof(form) - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* Looks name up in the query string (lws has split and decoded it). */
static int query_get(struct lws *wsi, const char *name, struct endpoint_field *field)
{
    char frag[8192];
    size_t nlen = strlen(name);
    memset(field, 0, sizeof(*field));
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            return 0;
        if ((size_t)n > nlen && !memcmp(frag, name, nlen) && frag[nlen] == '=') {
            field->len = (size_t)n - nlen - 1;
            field->value = strndup(frag + nlen + 1, field->len);
            if (!field->value)
                return -1;
            field->present = true;
            return 0;
        }
        if ((size_t)n == nlen && !memcmp(frag, name, nlen)) {
            field->value = strdup("");
            if (!field->value)
                return -1;
            field->present = true;
            return 0;
        }
    }
}

/* Finds a field in the form body (when it is a form), else in the query string. */
static int field_get(struct http_txn *txn, bool form, const char *name,
                     struct endpoint_field *field)
{
    if (form && txn->body_len) {
        if (endpoint_form_get(txn->body, txn->body_len, name, field))
            return -1;
        if (field->present)
            return 0;
    }
    return query_get(txn->wsi, name, field);
}

/* The node holding the device answered (or not): 200 only when it delivered. */
static void route_done(uint64_t owner, int status, void *arg)
{
    struct http_txn *txn = registry_find(server_self->reg, owner);
    (void)arg;
    metrics_route(status);
    if (!txn)
        return;
    registry_remove(server_self->reg, txn->id);
    txn->id = 0;
    http_respond(txn, status == 200 ? 200 : 202, "{}");
}

/*
 * Delivers a stored update: to the device if it is on this node, else to the node its host
 * record names. Returns 1 when the answer waits for that node, 0 when the update went to a
 * local device, -1 when it stays stored for the next hello.
 */
static int deliver(const struct store_req *req, uint64_t owner)
{
    if (!req->n_updates)
        return -1;
    if (!device_deliver(req->uaid, &req->updates[0]))
        return 0;
    if (!req->host[0] || !strcmp(req->host, server_self->node))
        return -1;
    if (router_route(server_self->router, req->host, req->uaid, &req->updates[0], owner,
                     route_done, NULL)) {
        metrics_route(ROUTER_FAILED);
        return -1;
    }
    return 1;
}

static void update_done(struct store_req *req)
{
    struct http_txn *txn = registry_find(server_self->reg, req->owner);
    if (!txn) {
        /* The app server hung up; the update is stored and delivered all the same. */
        if (req->status == STORE_OK)
            deliver(req, 0);
        store_req_free(req);
        return;
    }

    /* An answer written from here frees txn: it leaves the registry first. */
    int routed = req->status == STORE_OK ? deliver(req, txn->id) : -1;
    if (routed <= 0) {
        registry_remove(server_self->reg, txn->id);
        txn->id = 0;
    }
    switch (req->status) {
    case STORE_OK:
        if (routed <= 0)
            http_respond(txn, routed == 0 ? 200 : 202, "{}");
        break;
    case STORE_GONE:
        http_respond_error(txn, 410, "Gone");
        break;
    case STORE_UNAVAILABLE:
        txn->retry_after = store_mc_retry_after(server_self->store);
        if (!txn->retry_after)
            txn->retry_after = ENDPOINT_RETRY_AFTER; /* not memcached */
        http_respond_error(txn, 503, "Service Unavailable");
        break;
    default:
        http_respond_error(txn, 500, "An unexpected error occurred");
        break;
    }
    store_req_free(req);
}

int endpoint_finish(struct http_txn *txn)
{
    const struct config *cfg = server_self->cfg;
    struct endpoint_field version = {0}, data = {0};
    struct store_req *req = NULL;
    bool form = body_is_form(txn->wsi);
    int64_t v;
    int rc = 0;

    if (field_get(txn, form, "version", &version) || field_get(txn, form, "data", &data))
        goto fail;

    if (!version.present || version.len == 0) {
        v = (int64_t)time(NULL);
    } else if (endpoint_parse_version(version.value, version.len, &v)) {
        rc = http_respond_error(txn, 400, "Invalid Version");
        goto out;
    }
    if (data.present && data.len > (size_t)cfg->endpoint_max_data_len) {
        char text[64];
        snprintf(text, sizeof(text), "Data exceeds max length of %lld bytes",
                 (long long)cfg->endpoint_max_data_len);
        rc = http_respond_error(txn, 413, text);
        goto out;
    }
    if (data.present && !valid_utf8((const unsigned char *)data.value, data.len)) {
        rc = http_respond_error(txn, 400, "Invalid Data");
        goto out;
    }

    req = store_req_new(STORE_UPDATE);
    if (!req)
        goto fail;
    struct ids_spelling sp;
    if (token_decode(server_self->tokens, txn->token, strlen(txn->token), req->uaid, req->chid,
                     &sp))
        goto fail; /* decoded once already: a key reload in between is the only way here */
    req->chid_sp = sp;
    req->version = v;
    if (data.present && data.len) {
        req->data = data.value;
        req->data_len = data.len;
        data.value = NULL;
    }
    txn->id = registry_next_id(server_self->reg);
    if (registry_add(server_self->reg, txn->id, txn)) {
        txn->id = 0;
        goto fail;
    }
    req->owner = txn->id;
    req->done = update_done;
    /* A device on another node is found through its host record, read after the write. */
    req->want_host = server_self->node[0] && !registry_find_uaid(server_self->reg, req->uaid);
    store_submit(server_self->store, req);
    req = NULL;
    goto out;

fail:
    store_req_free(req);
    req = NULL;
    rc = http_respond_error(txn, 500, "An unexpected error occurred");
out:
    free(version.value);
    free(data.value);
    return rc;
}
