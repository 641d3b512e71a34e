/*
 * message: SimplePush JSON messages, parsed and built (SPEC §3-§6).
 *
 * Parsing keeps the jansson object of every message it accepts (and of every message it
 * rejects as invalid) so that the caller can echo it back in an error reply; everything else
 * it extracts is copied into struct message as fixed-size binary ids and integers. Building
 * goes through jansson too, so every string is escaped by one tested encoder, and the texts
 * are dumped compactly, in insertion order, into buffers allocated with malloc().
 */
#include "simplepushd/message.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "jansson integers must be 64 bits");

/* Jansson's flags for every message: duplicate keys are malformed; "\u0000" is valid JSON. */
#define MESSAGE_LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)
#define MESSAGE_DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

/* The largest version accepted as a JSON real: 2^53, up to which a double holds every integer. */
#define MESSAGE_REAL_VERSION_MAX 9007199254740992.0

/* Message types by name; messageType is matched against these case-insensitively. */
static const struct {
    const char *name;
    enum message_type type;
} message_types[] = {
    {"ping", MESSAGE_PING},         {"hello", MESSAGE_HELLO},
    {"register", MESSAGE_REGISTER}, {"unregister", MESSAGE_UNREGISTER},
    {"ack", MESSAGE_ACK},           {"purge", MESSAGE_PURGE},
};

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Whether s[0..len) equals the lowercase ASCII name, ignoring ASCII case (never locale). */
static bool name_equals(const char *s, size_t len, const char *name)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (name[i] == '\0' || ascii_lower(s[i]) != name[i])
            return false;
    }
    return name[i] == '\0';
}

/*
 * Loads buf as a JSON object, or returns NULL. An integer beyond jansson's 64-bit range
 * (valid JSON, e.g. in a junk field) fails the strict load; such a text is loaded again
 * with every integer as a real, so that the message is still answered.
 */
static json_t *load_object(const char *buf, size_t len)
{
    json_error_t err;
    json_t *root;

    /* Zeroed: jansson leaves the error code unset when its own allocations fail early. */
    memset(&err, 0, sizeof(err));
    root = json_loadb(buf, len, MESSAGE_LOAD_FLAGS, &err);
    if (!root && json_error_code(&err) == json_error_numeric_overflow)
        root = json_loadb(buf, len, MESSAGE_LOAD_FLAGS | JSON_DECODE_INT_AS_REAL, &err);
    if (root && !json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* Parses a JSON string holding an id in an accepted form; returns 0 or -1. */
static int parse_id(const json_t *v, uint8_t id[IDS_BYTES], struct ids_spelling *sp)
{
    if (!json_is_string(v))
        return -1;
    return ids_parse(json_string_value(v), json_string_length(v), id, sp);
}

/*
 * Parses a version: a JSON integer in 0..MESSAGE_VERSION_MAX, or a JSON real whose value is
 * an exact integer in 0..2^53 (1e3, 5.0). Returns 0 or -1.
 */
static int parse_version(const json_t *v, int64_t *version)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if (i < 0)
            return -1;
        *version = i;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        int64_t i;

        if (!(d >= 0.0 && d <= MESSAGE_REAL_VERSION_MAX))
            return -1;
        i = (int64_t)d;
        if ((double)i != d)
            return -1;
        *version = i;
        return 0;
    }
    return -1;
}

/* Parses one entry of an ack's "updates"; returns 0, or -1 for an entry to skip. */
static int parse_ack_entry(const json_t *entry, struct message_ack *ack)
{
    if (!json_is_object(entry))
        return -1;
    if (parse_id(json_object_get(entry, "channelID"), ack->chid, NULL) != 0)
        return -1;
    return parse_version(json_object_get(entry, "version"), &ack->version);
}

static enum message_result parse_hello(struct message *msg)
{
    json_t *ids = json_object_get(msg->root, "channelIDs");
    json_t *uaid = json_object_get(msg->root, "uaid");

    if (!json_is_array(ids))
        return MESSAGE_E_INVALID;
    msg->n_channel_ids = json_array_size(ids);

    if (!uaid || json_is_null(uaid)) {
        msg->uaid_kind = MESSAGE_UAID_ABSENT;
    } else if (!json_is_string(uaid)) {
        return MESSAGE_E_INVALID;
    } else if (parse_id(uaid, msg->uaid, &msg->uaid_sp) == 0) {
        msg->uaid_kind = MESSAGE_UAID_VALID;
    } else {
        msg->uaid_kind = MESSAGE_UAID_INVALID;
        memset(msg->uaid, 0, sizeof(msg->uaid));
        memset(&msg->uaid_sp, 0, sizeof(msg->uaid_sp));
    }
    return MESSAGE_OK;
}

static enum message_result parse_channel(struct message *msg)
{
    if (parse_id(json_object_get(msg->root, "channelID"), msg->chid, &msg->chid_sp) != 0) {
        memset(msg->chid, 0, sizeof(msg->chid));
        memset(&msg->chid_sp, 0, sizeof(msg->chid_sp));
        return MESSAGE_E_INVALID;
    }
    return MESSAGE_OK;
}

/* Collects the well-formed updates in two passes, so that junk entries cost no memory. */
static enum message_result parse_ack(struct message *msg)
{
    json_t *updates = json_object_get(msg->root, "updates");
    struct message_ack ack;
    size_t i, n, good = 0;

    if (!json_is_array(updates))
        return MESSAGE_E_INVALID;
    n = json_array_size(updates);
    for (i = 0; i < n; i++) {
        if (parse_ack_entry(json_array_get(updates, i), &ack) == 0)
            good++;
    }
    if (good == 0)
        return MESSAGE_OK;

    msg->acks = calloc(good, sizeof(*msg->acks));
    if (!msg->acks)
        return MESSAGE_E_JSON;
    for (i = 0; i < n && msg->n_acks < good; i++) {
        if (parse_ack_entry(json_array_get(updates, i), &msg->acks[msg->n_acks]) == 0)
            msg->n_acks++;
    }
    return MESSAGE_OK;
}

/* Finds the type named by the root's "messageType"; returns 0 or -1. */
static int find_type(const json_t *root, enum message_type *type)
{
    const json_t *v = json_object_get(root, "messageType");
    const char *s;
    size_t len, i;

    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    len = json_string_length(v);
    for (i = 0; i < sizeof(message_types) / sizeof(message_types[0]); i++) {
        if (name_equals(s, len, message_types[i].name)) {
            *type = message_types[i].type;
            return 0;
        }
    }
    return -1;
}

enum message_result message_parse(const char *buf, size_t len, struct message *out)
{
    enum message_result rc;

    if (!out)
        return MESSAGE_E_JSON;
    memset(out, 0, sizeof(*out));
    if (!buf)
        return MESSAGE_E_JSON;
    out->root = load_object(buf, len);
    if (!out->root)
        return MESSAGE_E_JSON;

    if (json_object_size(out->root) == 0) {
        out->type = MESSAGE_PING;
        return MESSAGE_OK;
    }
    if (find_type(out->root, &out->type) != 0)
        return MESSAGE_E_INVALID;

    switch (out->type) {
    case MESSAGE_HELLO:
        rc = parse_hello(out);
        break;
    case MESSAGE_REGISTER:
    case MESSAGE_UNREGISTER:
        rc = parse_channel(out);
        break;
    case MESSAGE_ACK:
        rc = parse_ack(out);
        break;
    case MESSAGE_PING:
    case MESSAGE_PURGE:
    default:
        rc = MESSAGE_OK;
        break;
    }
    if (rc == MESSAGE_E_JSON)
        message_clear(out);
    return rc;
}

void message_clear(struct message *msg)
{
    if (!msg)
        return;
    free(msg->acks);
    json_decref(msg->root);
    memset(msg, 0, sizeof(*msg));
}

/* A growing malloc'd buffer that json_dump_callback() writes into. */
struct dump_buf {
    char *data;
    size_t len;
    size_t cap;
};

static int dump_append(const char *chunk, size_t size, void *arg)
{
    struct dump_buf *b = arg;

    if (size >= b->cap - b->len) {
        size_t cap = b->cap;
        char *data;

        while (size >= cap - b->len) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        data = realloc(b->data, cap);
        if (!data)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, chunk, size);
    b->len += size;
    return 0;
}

/* Dumps v compactly into a malloc'd NUL-terminated text and releases v; NULL on failure. */
static char *dump_and_release(json_t *v, size_t *len)
{
    struct dump_buf b = {NULL, 0, 256};

    if (!v)
        goto fail;
    b.data = malloc(b.cap);
    if (!b.data)
        goto fail;
    if (json_dump_callback(v, dump_append, &b, MESSAGE_DUMP_FLAGS) != 0)
        goto fail;
    b.data[b.len] = '\0';
    json_decref(v);
    if (len)
        *len = b.len;
    return b.data;

fail:
    free(b.data);
    json_decref(v);
    return NULL;
}

char *message_hello_reply(const char *uaid, size_t *len)
{
    if (!uaid)
        return NULL;
    return dump_and_release(
        json_pack("{s:s, s:i, s:s}", "messageType", "hello", "status", 200, "uaid", uaid), len);
}

char *message_register_reply(const char *chid, int status, const char *endpoint, size_t *len)
{
    json_t *reply;

    if (!chid)
        return NULL;
    if (status == 200) {
        if (!endpoint)
            return NULL;
        reply = json_pack("{s:s, s:s, s:i, s:s}", "messageType", "register", "channelID", chid,
                          "status", status, "pushEndpoint", endpoint);
    } else {
        reply = json_pack("{s:s, s:s, s:i, s:s}", "messageType", "register", "channelID", chid,
                          "status", status, "error", message_error_text(status));
    }
    return dump_and_release(reply, len);
}

char *message_unregister_reply(const char *chid, size_t *len)
{
    if (!chid)
        return NULL;
    return dump_and_release(
        json_pack("{s:s, s:s, s:i}", "messageType", "unregister", "channelID", chid, "status", 200),
        len);
}

/* Appends one update object to the array; returns 0 or -1. */
static int append_update(json_t *array, const struct message_update *u)
{
    json_t *obj;

    if (!u->chid)
        return -1;
    obj = json_pack("{s:s, s:I}", "channelID", u->chid, "version", (json_int_t)u->version);
    if (!obj)
        return -1;
    if (u->data && json_object_set_new(obj, "data", json_stringn(u->data, u->data_len)) != 0)
        goto fail;
    if (json_array_append_new(array, obj) != 0)
        return -1;
    return 0;

fail:
    json_decref(obj);
    return -1;
}

char *message_notification(const struct message_update *updates, size_t n, size_t *len)
{
    json_t *reply, *array;
    size_t i;

    if (!updates || n == 0)
        return NULL;
    reply = json_pack("{s:s}", "messageType", "notification");
    array = json_array();
    if (!reply || json_object_set_new(reply, "updates", array) != 0)
        goto fail;
    for (i = 0; i < n; i++) {
        if (append_update(array, &updates[i]) != 0)
            goto fail;
    }
    return dump_and_release(reply, len);

fail:
    if (!reply)
        json_decref(array);
    json_decref(reply);
    return NULL;
}

/* Replaces a string "messageType" of obj by its ASCII lower-case form; returns 0 or -1. */
static int lower_message_type(json_t *obj)
{
    json_t *v = json_object_get(obj, "messageType");
    size_t len, i;
    char *lower;
    int rc;

    if (!json_is_string(v))
        return 0;
    len = json_string_length(v);
    lower = malloc(len + 1);
    if (!lower)
        return -1;
    memcpy(lower, json_string_value(v), len);
    for (i = 0; i < len; i++)
        lower[i] = ascii_lower(lower[i]);
    rc = json_object_set_new(obj, "messageType", json_stringn_nocheck(lower, len));
    free(lower);
    return rc;
}

char *message_error(json_t *request, int status, size_t *len)
{
    json_t *reply = json_is_object(request) ? json_copy(request) : json_object();

    if (!reply)
        return NULL;
    if (lower_message_type(reply) != 0)
        goto fail;
    if (json_object_set_new(reply, "status", json_integer(status)) != 0)
        goto fail;
    if (json_object_set_new(reply, "error", json_string(message_error_text(status))) != 0)
        goto fail;
    return dump_and_release(reply, len);

fail:
    json_decref(reply);
    return NULL;
}

const char *message_error_text(int status)
{
    switch (status) {
    case 401:
        return "Invalid Command";
    case 413:
        return "Too Many Channels";
    case 503:
        return "Service Unavailable";
    default:
        return "An unexpected error occurred";
    }
}
