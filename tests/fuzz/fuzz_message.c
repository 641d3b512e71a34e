/*
 * fuzz_message: message_parse() on arbitrary bytes, and the builders on what it accepts.
 *
 * Checked on every input, besides ASan/UBSan/LeakSanitizer's own checks:
 * - the result is one of the three documented codes; MESSAGE_E_JSON leaves *out zeroed, the
 *   other two keep a JSON object in out->root;
 * - the error echo (message_error) is exactly the request with a lower-cased messageType and
 *   "status"/"error" set in place or appended, reloads as strict JSON, and leaves the
 *   request unchanged;
 * - an accepted hello uaid or register/unregister channelID formats back byte for byte
 *   (SPEC §3), and the reply builders produce JSON carrying those strings;
 * - the acks of an ack message have versions in range and make a notification that reloads
 *   with the same channelIDs and versions.
 */
#include <jansson.h>
#include <string.h>

#include "fuzz_common.h"
#include "simplepushd/ids.h"
#include "simplepushd/message.h"

/* Jansson's flags for reloading what the builders wrote: strict, as message.c loads. */
#define RELOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)
#define DUMP_FLAGS   (JSON_COMPACT | JSON_PRESERVE_ORDER)

/* Data bytes given to every other update of a notification: a NUL and a two-byte letter. */
static const char update_data[] = "v\0\xc3\xa9";

/* Loads a builder's text, which must be a strict JSON object of exactly len bytes. */
static json_t *reload(const char *text, size_t len)
{
    json_t *v;

    FUZZ_CHECK(text != NULL);
    FUZZ_CHECK(strlen(text) <= len && text[len] == '\0');
    v = json_loadb(text, len, RELOAD_FLAGS, NULL);
    FUZZ_CHECK(json_is_object(v));
    return v;
}

/* Dumps v the way message.c does; the caller frees the text. */
static char *dump(const json_t *v)
{
    char *text = json_dumps(v, DUMP_FLAGS);

    FUZZ_CHECK(text != NULL);
    return text;
}

/* True when string member key of obj is s[0..len) exactly. */
static bool member_is(const json_t *obj, const char *key, const char *s, size_t len)
{
    const json_t *v = json_object_get(obj, key);

    return json_is_string(v) && json_string_length(v) == len &&
           memcmp(json_string_value(v), s, len) == 0;
}

/* The echo message_error() must write: the request, lower-cased, with status and error. */
static json_t *expected_echo(const json_t *request, int status)
{
    json_t *e = json_deep_copy(request);
    json_t *type;

    FUZZ_CHECK(e != NULL);
    type = json_object_get(e, "messageType");
    if (json_is_string(type)) {
        size_t len = json_string_length(type);
        char *lower = malloc(len + 1);

        FUZZ_CHECK(lower != NULL);
        memcpy(lower, json_string_value(type), len);
        for (size_t i = 0; i < len; i++)
            if (lower[i] >= 'A' && lower[i] <= 'Z')
                lower[i] = (char)(lower[i] - 'A' + 'a');
        FUZZ_CHECK(json_object_set_new(e, "messageType", json_stringn(lower, len)) == 0);
        free(lower);
    }
    FUZZ_CHECK(json_object_set_new(e, "status", json_integer(status)) == 0);
    FUZZ_CHECK(json_object_set_new(e, "error", json_string(message_error_text(status))) == 0);
    return e;
}

static void check_error_echo(json_t *request, int status)
{
    char *before = dump(request), *after, *want_text, *text;
    json_t *want = expected_echo(request, status), *got;
    size_t len;

    text = message_error(request, status, &len);
    got = reload(text, len);
    want_text = dump(want);
    FUZZ_CHECK(strcmp(want_text, text) == 0);
    FUZZ_CHECK(json_equal(want, got));
    after = dump(request);
    FUZZ_CHECK(strcmp(before, after) == 0);

    free(before);
    free(after);
    free(want_text);
    free(text);
    json_decref(want);
    json_decref(got);
}

/* The id string of member key formats back from id and sp byte for byte. */
static void check_spelling(const json_t *root, const char *key, const uint8_t id[IDS_BYTES],
                           const struct ids_spelling *sp, char out[IDS_MAX_STR + 1])
{
    size_t n = ids_format(id, sp, out);

    FUZZ_CHECK(n == 32 || n == 36);
    FUZZ_CHECK(member_is(root, key, out, n));
}

static void check_hello(const struct message *m)
{
    char uaid[IDS_MAX_STR + 1];
    json_t *reply;
    size_t len;
    char *text;

    FUZZ_CHECK(json_is_array(json_object_get(m->root, "channelIDs")));
    FUZZ_CHECK(m->n_channel_ids == json_array_size(json_object_get(m->root, "channelIDs")));
    if (m->uaid_kind != MESSAGE_UAID_VALID)
        return;
    check_spelling(m->root, "uaid", m->uaid, &m->uaid_sp, uaid);
    text = message_hello_reply(uaid, &len);
    reply = reload(text, len);
    FUZZ_CHECK(member_is(reply, "uaid", uaid, strlen(uaid)));
    FUZZ_CHECK(json_integer_value(json_object_get(reply, "status")) == 200);
    json_decref(reply);
    free(text);
}

static void check_channel(const struct message *m)
{
    static const char endpoint[] = "http://localhost:8080/update/x";
    static const int statuses[] = {200, 413, 500};
    char chid[IDS_MAX_STR + 1];
    json_t *reply;
    size_t len;
    char *text;

    check_spelling(m->root, "channelID", m->chid, &m->chid_sp, chid);
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        text =
            message_register_reply(chid, statuses[i], statuses[i] == 200 ? endpoint : NULL, &len);
        reply = reload(text, len);
        FUZZ_CHECK(member_is(reply, "channelID", chid, strlen(chid)));
        FUZZ_CHECK(json_integer_value(json_object_get(reply, "status")) == statuses[i]);
        json_decref(reply);
        free(text);
    }
    text = message_unregister_reply(chid, &len);
    reply = reload(text, len);
    FUZZ_CHECK(member_is(reply, "channelID", chid, strlen(chid)));
    json_decref(reply);
    free(text);
}

static void check_ack(const struct message *m)
{
    const json_t *updates = json_object_get(m->root, "updates");
    char(*chids)[IDS_MAX_STR + 1];
    struct message_update *u;
    json_t *reply, *list;
    size_t len;
    char *text;

    FUZZ_CHECK(json_is_array(updates));
    FUZZ_CHECK(m->n_acks <= json_array_size(updates));
    FUZZ_CHECK((m->n_acks == 0) == (m->acks == NULL));
    if (m->n_acks == 0)
        return;

    chids = calloc(m->n_acks, sizeof(*chids));
    u = calloc(m->n_acks, sizeof(*u));
    FUZZ_CHECK(chids && u);
    for (size_t i = 0; i < m->n_acks; i++) {
        FUZZ_CHECK(m->acks[i].version >= 0);
        ids_format(m->acks[i].chid, NULL, chids[i]);
        u[i].chid = chids[i];
        u[i].version = m->acks[i].version;
        if (i % 2) {
            u[i].data = update_data;
            u[i].data_len = sizeof(update_data) - 1;
        }
    }
    text = message_notification(u, m->n_acks, &len);
    reply = reload(text, len);
    FUZZ_CHECK(member_is(reply, "messageType", "notification", 12));
    list = json_object_get(reply, "updates");
    FUZZ_CHECK(json_array_size(list) == m->n_acks);
    for (size_t i = 0; i < m->n_acks; i++) {
        const json_t *entry = json_array_get(list, i);

        FUZZ_CHECK(member_is(entry, "channelID", chids[i], 32));
        FUZZ_CHECK(json_integer_value(json_object_get(entry, "version")) == u[i].version);
        if (i % 2)
            FUZZ_CHECK(member_is(entry, "data", update_data, sizeof(update_data) - 1));
        else
            FUZZ_CHECK(json_object_get(entry, "data") == NULL);
    }
    json_decref(reply);
    free(text);
    free(chids);
    free(u);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *text;
    json_t *v;

    (void)argc;
    (void)argv;
    /* The error echo of no request, or of a non-object, is {} with status and error. */
    text = message_error(NULL, 503, NULL);
    FUZZ_CHECK(text && strcmp(text, "{\"status\":503,\"error\":\"Service Unavailable\"}") == 0);
    free(text);
    v = json_integer(1);
    text = message_error(v, 500, NULL);
    FUZZ_CHECK(text && strstr(text, "\"status\":500") != NULL);
    free(text);
    json_decref(v);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct message m;
    enum message_result rc;

    memset(&m, 0xa5, sizeof(m));
    rc = message_parse((const char *)data, size, &m);
    if (rc == MESSAGE_E_JSON) {
        static const struct message zero;

        FUZZ_CHECK(memcmp(&m, &zero, sizeof(m)) == 0);
        return 0;
    }
    FUZZ_CHECK(rc == MESSAGE_OK || rc == MESSAGE_E_INVALID);
    FUZZ_CHECK(json_is_object(m.root));

    check_error_echo(m.root, rc == MESSAGE_OK ? 503 : 401);
    if (rc == MESSAGE_OK) {
        switch (m.type) {
        case MESSAGE_HELLO:
            check_hello(&m);
            break;
        case MESSAGE_REGISTER:
        case MESSAGE_UNREGISTER:
            check_channel(&m);
            break;
        case MESSAGE_ACK:
            check_ack(&m);
            break;
        case MESSAGE_PING:
        case MESSAGE_PURGE:
            FUZZ_CHECK(m.acks == NULL);
            break;
        default:
            FUZZ_CHECK(!"unknown message type");
        }
    }
    message_clear(&m);
    FUZZ_CHECK(m.root == NULL && m.acks == NULL);
    return 0;
}
