/*
 * message: SimplePush JSON messages, parsed and built. Pure functions with no I/O and no
 * session state, callable from any thread; fuzzed.
 *
 * Parsing applies the rules of SPEC §3-§5 that depend on the message alone: messageType
 * matched case-insensitively, keys case-sensitive, extra fields ignored, required fields
 * and their types checked, channelIDs validated as UUID forms. Rules that depend on the
 * session (hello before register, ping rate, uaid reset) belong to the caller.
 */
#ifndef SIMPLEPUSHD_MESSAGE_H
#define SIMPLEPUSHD_MESSAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simplepushd/ids.h"

/* The largest version a device or app server may use: 2^63 - 1. */
#define MESSAGE_VERSION_MAX INT64_MAX

enum message_type {
    MESSAGE_PING, /* {} or messageType "ping" */
    MESSAGE_HELLO,
    MESSAGE_REGISTER,
    MESSAGE_UNREGISTER,
    MESSAGE_ACK,
    MESSAGE_PURGE,
};

enum message_uaid {
    MESSAGE_UAID_ABSENT,  /* no "uaid" key, or null */
    MESSAGE_UAID_INVALID, /* a string that is empty or not a UUID form */
    MESSAGE_UAID_VALID,   /* a string in an accepted UUID form */
};

/*
 * One well-formed entry of an ack's "updates": an object whose "channelID" is a string in an
 * accepted id form and whose "version" is a JSON integer in 0..MESSAGE_VERSION_MAX, or a JSON
 * real with an exact integer value in 0..2^53 (1e3, 5.0). Other entries are skipped.
 */
struct message_ack {
    uint8_t chid[IDS_BYTES];
    int64_t version;
};

struct message {
    enum message_type type;
    json_t *root; /* the parsed object, owned; echoed back in error replies */

    /* hello */
    enum message_uaid uaid_kind;
    uint8_t uaid[IDS_BYTES];     /* when MESSAGE_UAID_VALID */
    struct ids_spelling uaid_sp; /* when MESSAGE_UAID_VALID */
    size_t n_channel_ids;        /* the length of "channelIDs" */

    /* register, unregister */
    uint8_t chid[IDS_BYTES];
    struct ids_spelling chid_sp;

    /* ack: the well-formed entries (malformed ones are skipped); NULL when none */
    struct message_ack *acks;
    size_t n_acks;
};

/*
 * MESSAGE_E_JSON covers: not JSON (truncated, trailing garbage, invalid UTF-8, raw NUL bytes,
 * empty or blank input), a top-level value other than an object, duplicate keys at any
 * depth, a key containing "\u0000" (jansson refuses those), a real beyond a double's range,
 * nesting deeper than jansson's limit, and allocation failure while parsing. "\u0000" inside
 * string values is accepted. An integer beyond 64 bits (valid JSON) does not make the
 * message malformed: it is then loaded with every integer as a real (so the error echo of
 * such a message shows integers as reals, and ack versions above 2^53 in it are skipped).
 * Everything else that is an object is MESSAGE_OK or MESSAGE_E_INVALID.
 */
enum message_result {
    MESSAGE_OK = 0,
    MESSAGE_E_JSON = -1,    /* not JSON, or not a JSON object: close without a reply */
    MESSAGE_E_INVALID = -2, /* 401 "Invalid Command": reply with message_error(), then close */
};

/*
 * Parses one message of len bytes. On MESSAGE_OK fills *out (release it with
 * message_clear()). On MESSAGE_E_INVALID out->root holds the object, for the error reply,
 * and must also be released with message_clear(). On MESSAGE_E_JSON nothing is kept and
 * *out is zeroed.
 *
 * MESSAGE_E_INVALID: a non-empty object whose "messageType" is missing, not a string, or
 * not one of ping/hello/register/unregister/ack/purge (any case); a hello whose
 * "channelIDs" is missing or not an array, or whose "uaid" is neither absent, null nor a
 * string; a register or unregister whose "channelID" is not a string in an accepted id
 * form; an ack whose "updates" is missing or not an array. A hello "uaid" string that is
 * not an id form, of any length, is MESSAGE_UAID_INVALID, not an error.
 */
enum message_result message_parse(const char *buf, size_t len, struct message *out);

/* Releases what message_parse() kept in msg. Accepts a zeroed msg. */
void message_clear(struct message *msg);

/*
 * Builders. Each returns a malloc'd (free() it), NUL-terminated compact JSON text with the
 * keys in the order shown, and its length in *len (len may be NULL). Strings passed in are
 * copied as they are and must be valid UTF-8. NULL is returned on allocation failure, for a
 * string that is not valid UTF-8, and for a required argument that is NULL.
 */

/* {"messageType":"hello","status":200,"uaid":<uaid>} */
char *message_hello_reply(const char *uaid, size_t *len);

/* {"messageType":"register","channelID":<chid>,"status":<status>,"pushEndpoint":<url>}; for a
 * status other than 200 "pushEndpoint" is replaced by "error":message_error_text(status)
 * and endpoint may be NULL. */
char *message_register_reply(const char *chid, int status, const char *endpoint, size_t *len);

/* {"messageType":"unregister","channelID":<chid>,"status":200} */
char *message_unregister_reply(const char *chid, size_t *len);

/* One update of a notification. data may be NULL (no "data" field); otherwise "data" is
 * written, even when data_len is 0. data_len bytes of valid UTF-8 (NUL bytes allowed). */
struct message_update {
    const char *chid;
    int64_t version;
    const char *data;
    size_t data_len;
};

/* {"messageType":"notification","updates":[...]}; n must be at least 1. */
char *message_notification(const struct message_update *updates, size_t n, size_t *len);

/*
 * The error reply: the request object echoed back with "status" and "error" set (a string
 * messageType is lower-cased, ASCII letters only). Keys keep their order; "status" and
 * "error" are appended, or overwritten in place when the request already has them. The
 * request itself is not modified. request may be NULL or a non-object ({} is echoed).
 */
char *message_error(json_t *request, int status, size_t *len);

/* The error text of a status: 401 "Invalid Command", 413 "Too Many Channels",
 * 503 "Service Unavailable", anything else "An unexpected error occurred". */
const char *message_error_text(int status);

#endif
