/*
 * Unit tests of the message module: every device message rule of SPEC §4 and every hello
 * rule of §5 that the message alone decides, malformed JSON of every kind, ack entry
 * filtering and version bounds, and the exact texts of every builder and error echo.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "simplepushd/message.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* A string literal and its length, NUL bytes inside included. */
#define TXT(s) s, sizeof(s) - 1

/* Two spellings of one id, and a second id. */
#define ID_LOWER  "0123456789abcdef0123456789abcdef"
#define ID_DASHED "01234567-89AB-cdef-0123-456789ABCDEF"
#define ID_OTHER  "ffffffff-0000-4000-8000-00000000000a"

static const uint8_t id_bytes[IDS_BYTES] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
static const uint8_t other_bytes[IDS_BYTES] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x40, 0x00,
                                               0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a};

static const char *result_name(enum message_result r)
{
    switch (r) {
    case MESSAGE_OK:
        return "OK";
    case MESSAGE_E_JSON:
        return "E_JSON";
    case MESSAGE_E_INVALID:
        return "E_INVALID";
    }
    return "?";
}

/* ------------------------------------------------------------------------------------- */
/* Classification: which result and which type every kind of message gets.              */

struct parse_row {
    const char *name;
    const char *text;
    size_t len;
    enum message_result result;
    enum message_type type; /* when MESSAGE_OK */
};

static const struct parse_row parse_rows[] = {
    /* SPEC §4: ping. */
    {"empty object", TXT("{}"), MESSAGE_OK, MESSAGE_PING},
    {"empty object, blanks", TXT(" \r\n\t{ \n } \n"), MESSAGE_OK, MESSAGE_PING},
    {"ping", TXT("{\"messageType\":\"ping\"}"), MESSAGE_OK, MESSAGE_PING},
    {"PING", TXT("{\"messageType\":\"PING\"}"), MESSAGE_OK, MESSAGE_PING},
    {"Ping with extra fields",
     TXT("{\"messageType\":\"Ping\",\"channelID\":5,\"updates\":null,\"x\":[{}]}"), MESSAGE_OK,
     MESSAGE_PING},
    /* SPEC §4: purge, before or after hello, any other field ignored. */
    {"purge", TXT("{\"messageType\":\"purge\"}"), MESSAGE_OK, MESSAGE_PURGE},
    {"PuRgE with fields", TXT("{\"messageType\":\"PuRgE\",\"uaid\":7}"), MESSAGE_OK, MESSAGE_PURGE},
    /* SPEC §4-§5: hello. */
    {"hello", TXT("{\"messageType\":\"hello\",\"channelIDs\":[]}"), MESSAGE_OK, MESSAGE_HELLO},
    {"HELLO", TXT("{\"messageType\":\"HELLO\",\"channelIDs\":[]}"), MESSAGE_OK, MESSAGE_HELLO},
    {"hello, key order reversed", TXT("{\"channelIDs\":[],\"messageType\":\"hello\"}"), MESSAGE_OK,
     MESSAGE_HELLO},
    {"hello with extra fields",
     TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"wakeup_hostport\":{\"ip\":\"1.2.3.4\","
         "\"port\":5},\"mobilenetwork\":{\"mcc\":\"214\"},\"connect\":{},\"use_webpush\":true}"),
     MESSAGE_OK, MESSAGE_HELLO},
    {"hello, channelIDs contents not validated",
     TXT("{\"messageType\":\"hello\",\"channelIDs\":[1,null,\"\\u0001\",{},[],true]}"), MESSAGE_OK,
     MESSAGE_HELLO},
    {"hello, uaid number", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":5}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid zero", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":0}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid real", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":1.5}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid true", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":true}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid false", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":false}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid object", TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":{}}"),
     MESSAGE_E_INVALID, 0},
    {"hello, uaid array",
     TXT("{\"messageType\":\"hello\",\"channelIDs\":[],\"uaid\":[\"" ID_LOWER "\"]}"),
     MESSAGE_E_INVALID, 0},
    {"hello, no channelIDs", TXT("{\"messageType\":\"hello\"}"), MESSAGE_E_INVALID, 0},
    {"hello, no channelIDs but uaid", TXT("{\"messageType\":\"hello\",\"uaid\":\"" ID_LOWER "\"}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelIDs null", TXT("{\"messageType\":\"hello\",\"channelIDs\":null}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelIDs string", TXT("{\"messageType\":\"hello\",\"channelIDs\":\"\"}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelIDs number", TXT("{\"messageType\":\"hello\",\"channelIDs\":0}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelIDs object", TXT("{\"messageType\":\"hello\",\"channelIDs\":{}}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelIDs bool", TXT("{\"messageType\":\"hello\",\"channelIDs\":true}"),
     MESSAGE_E_INVALID, 0},
    {"hello, ChannelIds key", TXT("{\"messageType\":\"hello\",\"ChannelIds\":[]}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelids key", TXT("{\"messageType\":\"hello\",\"channelids\":[]}"),
     MESSAGE_E_INVALID, 0},
    {"hello, channelID key", TXT("{\"messageType\":\"hello\",\"channelID\":[]}"), MESSAGE_E_INVALID,
     0},
    /* SPEC §4: register and unregister. */
    {"register lower", TXT("{\"messageType\":\"register\",\"channelID\":\"" ID_LOWER "\"}"),
     MESSAGE_OK, MESSAGE_REGISTER},
    {"Register dashed", TXT("{\"messageType\":\"Register\",\"channelID\":\"" ID_DASHED "\"}"),
     MESSAGE_OK, MESSAGE_REGISTER},
    {"register, extra uaid ignored",
     TXT("{\"messageType\":\"register\",\"uaid\":42,\"channelID\":\"" ID_LOWER "\"}"), MESSAGE_OK,
     MESSAGE_REGISTER},
    {"register, no channelID", TXT("{\"messageType\":\"register\"}"), MESSAGE_E_INVALID, 0},
    {"register, channelID null", TXT("{\"messageType\":\"register\",\"channelID\":null}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID number", TXT("{\"messageType\":\"register\",\"channelID\":5}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID bool", TXT("{\"messageType\":\"register\",\"channelID\":true}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID object", TXT("{\"messageType\":\"register\",\"channelID\":{}}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID array",
     TXT("{\"messageType\":\"register\",\"channelID\":[\"" ID_LOWER "\"]}"), MESSAGE_E_INVALID, 0},
    {"register, channelID empty", TXT("{\"messageType\":\"register\",\"channelID\":\"\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID garbage", TXT("{\"messageType\":\"register\",\"channelID\":\"foo\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID 31 hex",
     TXT("{\"messageType\":\"register\",\"channelID\":\"0123456789abcdef0123456789abcde\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID 33 hex",
     TXT("{\"messageType\":\"register\",\"channelID\":\"" ID_LOWER "0\"}"), MESSAGE_E_INVALID, 0},
    {"register, channelID non-hex",
     TXT("{\"messageType\":\"register\",\"channelID\":\"0123456789abcdeg0123456789abcdef\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID misplaced dash",
     TXT("{\"messageType\":\"register\",\"channelID\":\"0123456-789AB-cdef-0123-456789ABCDEF\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelID braced",
     TXT("{\"messageType\":\"register\",\"channelID\":\"{" ID_DASHED "}\"}"), MESSAGE_E_INVALID, 0},
    {"register, channelID with NUL",
     TXT("{\"messageType\":\"register\",\"channelID\":\"0123456789abcdef0123456789abcde\\u0000"
         "\"}"),
     MESSAGE_E_INVALID, 0},
    {"register, channelIDs array instead",
     TXT("{\"messageType\":\"register\",\"channelIDs\":[\"" ID_LOWER "\"]}"), MESSAGE_E_INVALID, 0},
    {"register, ChannelID key",
     TXT("{\"messageType\":\"register\",\"ChannelID\":\"" ID_LOWER "\"}"), MESSAGE_E_INVALID, 0},
    {"unregister", TXT("{\"messageType\":\"unregister\",\"channelID\":\"" ID_DASHED "\"}"),
     MESSAGE_OK, MESSAGE_UNREGISTER},
    {"UNREGISTER", TXT("{\"messageType\":\"UNREGISTER\",\"channelID\":\"" ID_LOWER "\"}"),
     MESSAGE_OK, MESSAGE_UNREGISTER},
    {"unregister, no channelID", TXT("{\"messageType\":\"unregister\"}"), MESSAGE_E_INVALID, 0},
    {"unregister, channelID number", TXT("{\"messageType\":\"unregister\",\"channelID\":1}"),
     MESSAGE_E_INVALID, 0},
    {"unregister, channelID empty", TXT("{\"messageType\":\"unregister\",\"channelID\":\"\"}"),
     MESSAGE_E_INVALID, 0},
    {"unregister, channelID garbage",
     TXT("{\"messageType\":\"unregister\",\"channelID\":\"not-a-uuid\"}"), MESSAGE_E_INVALID, 0},
    /* SPEC §4: ack. */
    {"ack, empty list", TXT("{\"messageType\":\"ack\",\"updates\":[]}"), MESSAGE_OK, MESSAGE_ACK},
    {"acK", TXT("{\"messageType\":\"acK\",\"updates\":[]}"), MESSAGE_OK, MESSAGE_ACK},
    {"ack, no updates", TXT("{\"messageType\":\"ack\"}"), MESSAGE_E_INVALID, 0},
    {"ack, updates null", TXT("{\"messageType\":\"ack\",\"updates\":null}"), MESSAGE_E_INVALID, 0},
    {"ack, updates object", TXT("{\"messageType\":\"ack\",\"updates\":{}}"), MESSAGE_E_INVALID, 0},
    {"ack, updates string", TXT("{\"messageType\":\"ack\",\"updates\":\"x\"}"), MESSAGE_E_INVALID,
     0},
    {"ack, updates number", TXT("{\"messageType\":\"ack\",\"updates\":1}"), MESSAGE_E_INVALID, 0},
    {"ack, Updates key", TXT("{\"messageType\":\"ack\",\"Updates\":[]}"), MESSAGE_E_INVALID, 0},
    {"ack, expired only", TXT("{\"messageType\":\"ack\",\"expired\":[]}"), MESSAGE_E_INVALID, 0},
    /* SPEC §4: anything else. */
    {"no messageType", TXT("{\"x\":1}"), MESSAGE_E_INVALID, 0},
    {"messageType key lower case", TXT("{\"messagetype\":\"hello\",\"channelIDs\":[]}"),
     MESSAGE_E_INVALID, 0},
    {"MessageType key", TXT("{\"MessageType\":\"ping\"}"), MESSAGE_E_INVALID, 0},
    {"spaced messageType key", TXT("{\" messageType \":\"hello\",\"channelIDs\":[]}"),
     MESSAGE_E_INVALID, 0},
    {"messageType empty", TXT("{\"messageType\":\"\"}"), MESSAGE_E_INVALID, 0},
    {"messageType null", TXT("{\"messageType\":null}"), MESSAGE_E_INVALID, 0},
    {"messageType number", TXT("{\"messageType\":1}"), MESSAGE_E_INVALID, 0},
    {"messageType bool", TXT("{\"messageType\":true}"), MESSAGE_E_INVALID, 0},
    {"messageType array", TXT("{\"messageType\":[\"hello\"]}"), MESSAGE_E_INVALID, 0},
    {"messageType object", TXT("{\"messageType\":{}}"), MESSAGE_E_INVALID, 0},
    {"messageType unknown", TXT("{\"messageType\":\"pong\"}"), MESSAGE_E_INVALID, 0},
    {"messageType notification", TXT("{\"messageType\":\"notification\"}"), MESSAGE_E_INVALID, 0},
    {"messageType prefix", TXT("{\"messageType\":\"hell\",\"channelIDs\":[]}"), MESSAGE_E_INVALID,
     0},
    {"messageType longer", TXT("{\"messageType\":\"helloo\",\"channelIDs\":[]}"), MESSAGE_E_INVALID,
     0},
    {"messageType leading blank", TXT("{\"messageType\":\" hello\",\"channelIDs\":[]}"),
     MESSAGE_E_INVALID, 0},
    {"messageType trailing blank", TXT("{\"messageType\":\"ping \"}"), MESSAGE_E_INVALID, 0},
    {"messageType with NUL", TXT("{\"messageType\":\"ping\\u0000\"}"), MESSAGE_E_INVALID, 0},
    {"messageType with inner NUL", TXT("{\"messageType\":\"pi\\u0000ng\"}"), MESSAGE_E_INVALID, 0},
    {"messageType non-ASCII", TXT("{\"messageType\":\"p\xc3\xacng\"}"), MESSAGE_E_INVALID, 0},
    /* Malformed JSON or a non-object: close without a reply. */
    {"empty input", TXT(""), MESSAGE_E_JSON, 0},
    {"blank input", TXT(" \t\r\n"), MESSAGE_E_JSON, 0},
    {"truncated", TXT("{\"messageType\":\"hello\",\"channelIDs\":["), MESSAGE_E_JSON, 0},
    {"open brace", TXT("{"), MESSAGE_E_JSON, 0},
    {"close brace", TXT("}"), MESSAGE_E_JSON, 0},
    {"truncated string", TXT("{\"messageType\":\"pi"), MESSAGE_E_JSON, 0},
    {"trailing garbage", TXT("{} x"), MESSAGE_E_JSON, 0},
    {"trailing brace", TXT("{}}"), MESSAGE_E_JSON, 0},
    {"two objects", TXT("{}{}"), MESSAGE_E_JSON, 0},
    {"trailing comma", TXT("{\"a\":1,}"), MESSAGE_E_JSON, 0},
    {"single quotes", TXT("{'messageType':'ping'}"), MESSAGE_E_JSON, 0},
    {"bare key", TXT("{messageType:\"ping\"}"), MESSAGE_E_JSON, 0},
    {"comment", TXT("{} // ping"), MESSAGE_E_JSON, 0},
    {"array", TXT("[]"), MESSAGE_E_JSON, 0},
    {"array of object", TXT("[{\"messageType\":\"ping\"}]"), MESSAGE_E_JSON, 0},
    {"string", TXT("\"ping\""), MESSAGE_E_JSON, 0},
    {"number", TXT("5"), MESSAGE_E_JSON, 0},
    {"null", TXT("null"), MESSAGE_E_JSON, 0},
    {"true", TXT("true"), MESSAGE_E_JSON, 0},
    {"invalid UTF-8 byte", TXT("{\"messageType\":\"ping\",\"x\":\"\xff\"}"), MESSAGE_E_JSON, 0},
    {"overlong UTF-8", TXT("{\"x\":\"\xc0\xaf\"}"), MESSAGE_E_JSON, 0},
    {"truncated UTF-8", TXT("{\"x\":\"\xe2\x82\"}"), MESSAGE_E_JSON, 0},
    {"UTF-16 surrogate in UTF-8", TXT("{\"x\":\"\xed\xa0\x80\"}"), MESSAGE_E_JSON, 0},
    {"lone surrogate escape", TXT("{\"x\":\"\\ud800\"}"), MESSAGE_E_JSON, 0},
    {"raw NUL in string", TXT("{\"messageType\":\"pi\0ng\"}"), MESSAGE_E_JSON, 0},
    {"raw NUL between tokens", TXT("{\"messageType\":\0\"ping\"}"), MESSAGE_E_JSON, 0},
    {"raw NUL after object", TXT("{}\0"), MESSAGE_E_JSON, 0},
    {"raw control char in string", TXT("{\"x\":\"a\x01\"}"), MESSAGE_E_JSON, 0},
    {"duplicate key", TXT("{\"messageType\":\"ping\",\"messageType\":\"hello\"}"), MESSAGE_E_JSON,
     0},
    {"duplicate junk key", TXT("{\"messageType\":\"ping\",\"x\":1,\"x\":1}"), MESSAGE_E_JSON, 0},
    {"duplicate nested key",
     TXT("{\"messageType\":\"ack\",\"updates\":[{\"version\":1,\"version\":2}]}"), MESSAGE_E_JSON,
     0},
    {"NUL in key", TXT("{\"message\\u0000Type\":\"ping\"}"), MESSAGE_E_JSON, 0},
    {"real overflow", TXT("{\"messageType\":\"ping\",\"x\":1e400}"), MESSAGE_E_JSON, 0},
    /* Valid JSON that jansson needs care for: still answered. */
    {"escaped NUL in junk value", TXT("{\"messageType\":\"purge\",\"x\":\"a\\u0000b\"}"),
     MESSAGE_OK, MESSAGE_PURGE},
    {"integer over 64 bits in junk",
     TXT("{\"messageType\":\"register\",\"channelID\":\"" ID_LOWER
         "\",\"x\":123456789012345678901234567890}"),
     MESSAGE_OK, MESSAGE_REGISTER},
    {"negative integer over 64 bits in junk",
     TXT("{\"messageType\":\"ping\",\"x\":-123456789012345678901234567890}"), MESSAGE_OK,
     MESSAGE_PING},
    {"integer over 64 bits, invalid message", TXT("{\"messageType\":9223372036854775808}"),
     MESSAGE_E_INVALID, 0},
    {"escaped messageType", TXT("{\"\\u006dessageType\":\"\\u0070ing\"}"), MESSAGE_OK,
     MESSAGE_PING},
};

static void test_parse_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(parse_rows); i++) {
        const struct parse_row *row = &parse_rows[i];
        struct message m;
        enum message_result r;

        memset(&m, 0xa5, sizeof(m));
        r = message_parse(row->text, row->len, &m);
        if (r != row->result)
            fail_msg("row \"%s\": got %s, want %s", row->name, result_name(r),
                     result_name(row->result));
        switch (r) {
        case MESSAGE_OK:
            if (m.type != row->type)
                fail_msg("row \"%s\": type %d, want %d", row->name, m.type, row->type);
            if (!json_is_object(m.root))
                fail_msg("row \"%s\": no root", row->name);
            break;
        case MESSAGE_E_INVALID:
            if (!json_is_object(m.root))
                fail_msg("row \"%s\": E_INVALID without root", row->name);
            break;
        case MESSAGE_E_JSON: {
            struct message zero;

            memset(&zero, 0, sizeof(zero));
            if (memcmp(&m, &zero, sizeof(m)) != 0)
                fail_msg("row \"%s\": E_JSON left data in *out", row->name);
            break;
        }
        }
        message_clear(&m);
    }
}

static void test_parse_null_arguments(void **state)
{
    struct message m;

    memset(&m, 0x5a, sizeof(m));
    assert_int_equal(message_parse(NULL, 0, &m), MESSAGE_E_JSON);
    assert_null(m.root);
    assert_null(m.acks);
    assert_int_equal(message_parse(NULL, 2, &m), MESSAGE_E_JSON);
    assert_int_equal(message_parse("{}", 2, NULL), MESSAGE_E_JSON);
}

/* Only len bytes are read: a buffer need not be NUL-terminated, and a prefix is parsed. */
static void test_parse_uses_len(void **state)
{
    const char text[] = "{}{\"messageType\":5}";
    struct message m;

    assert_int_equal(message_parse(text, 2, &m), MESSAGE_OK);
    assert_int_equal(m.type, MESSAGE_PING);
    message_clear(&m);
    assert_int_equal(message_parse(text, 1, &m), MESSAGE_E_JSON);
    assert_int_equal(message_parse(text, sizeof(text) - 1, &m), MESSAGE_E_JSON);
}

/* ------------------------------------------------------------------------------------- */
/* hello: uaid kinds and the channelIDs count (SPEC §5 rules 1-3).                       */

struct hello_row {
    const char *name;
    const char *text;
    size_t len;
    enum message_uaid kind;
    size_t n_channel_ids;
    const char *echo; /* MESSAGE_UAID_VALID: the spelling ids_format() must give back */
};

#define HELLO(ids, rest) "{\"messageType\":\"hello\",\"channelIDs\":" ids rest "}"

static const struct hello_row hello_rows[] = {
    {"no uaid", TXT(HELLO("[]", "")), MESSAGE_UAID_ABSENT, 0, NULL},
    {"uaid null", TXT(HELLO("[]", ",\"uaid\":null")), MESSAGE_UAID_ABSENT, 0, NULL},
    {"uaid empty", TXT(HELLO("[]", ",\"uaid\":\"\"")), MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid valid_uaid", TXT(HELLO("[]", ",\"uaid\":\"valid_uaid\"")), MESSAGE_UAID_INVALID, 0,
     NULL},
    {"uaid fooey barrey", TXT(HELLO("[]", ",\"uaid\":\" fooey barrey \"")), MESSAGE_UAID_INVALID, 0,
     NULL},
    {"uaid \"0\"", TXT(HELLO("[]", ",\"uaid\":\"0\"")), MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid \"True\"", TXT(HELLO("[]", ",\"uaid\":\"True\"")), MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid 33 hex", TXT(HELLO("[]", ",\"uaid\":\"" ID_LOWER "a\"")), MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid dashed, 35 chars", TXT(HELLO("[]", ",\"uaid\":\"01234567-89AB-cdef-0123-456789ABCDE\"")),
     MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid with NUL", TXT(HELLO("[]", ",\"uaid\":\"0123456789abcdef0123456789abcde\\u0000\"")),
     MESSAGE_UAID_INVALID, 0, NULL},
    {"uaid with blank", TXT(HELLO("[]", ",\"uaid\":\" " ID_LOWER "\"")), MESSAGE_UAID_INVALID, 0,
     NULL},
    {"uaid 32 lower hex", TXT(HELLO("[]", ",\"uaid\":\"" ID_LOWER "\"")), MESSAGE_UAID_VALID, 0,
     ID_LOWER},
    {"uaid dashed mixed case", TXT(HELLO("[\"a\",\"b\"]", ",\"uaid\":\"" ID_DASHED "\"")),
     MESSAGE_UAID_VALID, 2, ID_DASHED},
    {"uaid 32 upper hex", TXT(HELLO("[]", ",\"uaid\":\"0123456789ABCDEF0123456789ABCDEF\"")),
     MESSAGE_UAID_VALID, 0, "0123456789ABCDEF0123456789ABCDEF"},
    {"channelIDs of junk", TXT(HELLO("[1,null,\"\\u0001\",{},[],true,\"x\"]", "")),
     MESSAGE_UAID_ABSENT, 7, NULL},
    {"uaid before channelIDs",
     TXT("{\"uaid\":\"" ID_LOWER "\",\"channelIDs\":[\"" ID_OTHER "\"],\"messageType\":\"Hello\"}"),
     MESSAGE_UAID_VALID, 1, ID_LOWER},
};

static void test_hello_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(hello_rows); i++) {
        const struct hello_row *row = &hello_rows[i];
        struct message m;
        enum message_result r = message_parse(row->text, row->len, &m);

        if (r != MESSAGE_OK)
            fail_msg("row \"%s\": got %s", row->name, result_name(r));
        if (m.type != MESSAGE_HELLO)
            fail_msg("row \"%s\": type %d", row->name, m.type);
        if (m.uaid_kind != row->kind)
            fail_msg("row \"%s\": uaid kind %d, want %d", row->name, m.uaid_kind, row->kind);
        if (m.n_channel_ids != row->n_channel_ids)
            fail_msg("row \"%s\": %zu channelIDs, want %zu", row->name, m.n_channel_ids,
                     row->n_channel_ids);
        if (row->kind == MESSAGE_UAID_VALID) {
            char echo[IDS_MAX_STR + 1];

            if (memcmp(m.uaid, id_bytes, IDS_BYTES) != 0)
                fail_msg("row \"%s\": wrong uaid bytes", row->name);
            ids_format(m.uaid, &m.uaid_sp, echo);
            if (strcmp(echo, row->echo) != 0)
                fail_msg("row \"%s\": uaid spelled %s, want %s", row->name, echo, row->echo);
        } else {
            static const uint8_t zero[IDS_BYTES];

            if (memcmp(m.uaid, zero, IDS_BYTES) != 0)
                fail_msg("row \"%s\": uaid bytes set for a non-valid uaid", row->name);
        }
        message_clear(&m);
    }
}

/* Builds a hello with a uaid string of n copies of c, and n_ids channelIDs. */
static char *make_hello(size_t uaid_len, char c, size_t n_ids, size_t *len)
{
    size_t cap = uaid_len + n_ids * 40 + 128, off;
    char *buf = malloc(cap);

    assert_non_null(buf);
    off = (size_t)sprintf(buf, "{\"messageType\":\"hello\",\"uaid\":\"");
    memset(buf + off, c, uaid_len);
    off += uaid_len;
    off += (size_t)sprintf(buf + off, "\",\"channelIDs\":[");
    for (size_t i = 0; i < n_ids; i++)
        off +=
            (size_t)sprintf(buf + off, "%s\"%08zx-0000-4000-8000-000000000000\"", i ? "," : "", i);
    off += (size_t)sprintf(buf + off, "]}");
    assert_true(off < cap);
    *len = off;
    return buf;
}

/* SPEC §5 rule 3 and reference §16 item 5: a 64,000-character garbage uaid gets a new uaid. */
static void test_hello_huge_uaid(void **state)
{
    size_t len;
    char *text = make_hello(64000, 'z', 3, &len);
    struct message m;

    assert_int_equal(message_parse(text, len, &m), MESSAGE_OK);
    assert_int_equal(m.type, MESSAGE_HELLO);
    assert_int_equal(m.uaid_kind, MESSAGE_UAID_INVALID);
    assert_int_equal(m.n_channel_ids, 3);
    message_clear(&m);
    free(text);

    /* 64,000 hex digits are still not an id. */
    text = make_hello(64000, 'a', 0, &len);
    assert_int_equal(message_parse(text, len, &m), MESSAGE_OK);
    assert_int_equal(m.uaid_kind, MESSAGE_UAID_INVALID);
    message_clear(&m);
    free(text);
}

/* SPEC §5 rule 3: the count of a long channelIDs list is reported exactly (over 200 too). */
static void test_hello_many_channel_ids(void **state)
{
    static const size_t counts[] = {0, 1, 199, 200, 201, 5000};

    for (size_t i = 0; i < N_ELEMS(counts); i++) {
        size_t len;
        char *text = make_hello(32, 'b', counts[i], &len);
        struct message m;

        assert_int_equal(message_parse(text, len, &m), MESSAGE_OK);
        assert_int_equal(m.uaid_kind, MESSAGE_UAID_VALID);
        assert_int_equal(m.n_channel_ids, counts[i]);
        message_clear(&m);
        free(text);
    }
}

/* ------------------------------------------------------------------------------------- */
/* register and unregister: the channelID bytes and its spelling.                         */

struct channel_row {
    const char *text;
    enum message_type type;
    const uint8_t *bytes;
    const char *echo;
};

static const struct channel_row channel_rows[] = {
    {"{\"messageType\":\"register\",\"channelID\":\"" ID_LOWER "\"}", MESSAGE_REGISTER, id_bytes,
     ID_LOWER},
    {"{\"messageType\":\"register\",\"channelID\":\"" ID_DASHED "\"}", MESSAGE_REGISTER, id_bytes,
     ID_DASHED},
    {"{\"channelID\":\"" ID_OTHER "\",\"messageType\":\"REGISTER\",\"channelIDs\":5}",
     MESSAGE_REGISTER, other_bytes, ID_OTHER},
    {"{\"messageType\":\"unregister\",\"channelID\":\"" ID_DASHED "\"}", MESSAGE_UNREGISTER,
     id_bytes, ID_DASHED},
    {"{\"messageType\":\"unRegister\",\"channelID\":\"FFFFFFFF00004000800000000000000A\"}",
     MESSAGE_UNREGISTER, other_bytes, "FFFFFFFF00004000800000000000000A"},
};

static void test_channel_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(channel_rows); i++) {
        const struct channel_row *row = &channel_rows[i];
        struct message m;
        char echo[IDS_MAX_STR + 1];

        assert_int_equal(message_parse(row->text, strlen(row->text), &m), MESSAGE_OK);
        assert_int_equal(m.type, row->type);
        assert_memory_equal(m.chid, row->bytes, IDS_BYTES);
        ids_format(m.chid, &m.chid_sp, echo);
        assert_string_equal(echo, row->echo);
        assert_null(m.acks);
        assert_int_equal(m.n_acks, 0);
        message_clear(&m);
    }
}

/* SPEC §2: a ~130 KB message with junk fields is read and answered, not dropped. */
static void test_huge_message(void **state)
{
    static const char head[] = "{\"messageType\":\"register\",\"junk\":\"";
    static const char tail[] = "\",\"channelID\":\"" ID_DASHED "\",\"more\":[1,2,3]}";
    size_t junk = 130 * 1024, len = sizeof(head) - 1 + junk + sizeof(tail) - 1;
    char *text = malloc(len);
    struct message m;
    char *reply;
    size_t reply_len;

    assert_non_null(text);
    memcpy(text, head, sizeof(head) - 1);
    memset(text + sizeof(head) - 1, 'j', junk);
    memcpy(text + sizeof(head) - 1 + junk, tail, sizeof(tail) - 1);
    assert_true(len > 130 * 1024);

    assert_int_equal(message_parse(text, len, &m), MESSAGE_OK);
    assert_int_equal(m.type, MESSAGE_REGISTER);
    assert_memory_equal(m.chid, id_bytes, IDS_BYTES);
    message_clear(&m);

    /* The same message with an invalid type is echoed whole. */
    memcpy(text + 16, "regisTRX", 8);
    assert_int_equal(message_parse(text, len, &m), MESSAGE_E_INVALID);
    reply = message_error(m.root, 401, &reply_len);
    assert_non_null(reply);
    assert_true(reply_len > junk);
    assert_non_null(strstr(reply, "\"messageType\":\"registrx\""));
    assert_non_null(strstr(reply, "\"status\":401,\"error\":\"Invalid Command\"}"));
    free(reply);
    message_clear(&m);
    free(text);
}

/* ------------------------------------------------------------------------------------- */
/* ack: entry filtering and version bounds.                                              */

struct ack_want {
    const uint8_t *chid;
    int64_t version;
};

struct ack_row {
    const char *name;
    const char *updates; /* the JSON value of "updates" */
    size_t n;
    struct ack_want want[4];
};

#define ENTRY(id, v) "{\"channelID\":\"" id "\",\"version\":" v "}"

static const struct ack_row ack_rows[] = {
    {"empty", "[]", 0, {{0}}},
    {"one", "[" ENTRY(ID_LOWER, "7") "]", 1, {{id_bytes, 7}}},
    {"two, both spellings",
     "[" ENTRY(ID_DASHED, "1") "," ENTRY(ID_OTHER, "2") "]",
     2,
     {{id_bytes, 1}, {other_bytes, 2}}},
    {"version 0", "[" ENTRY(ID_LOWER, "0") "]", 1, {{id_bytes, 0}}},
    {"version -0", "[" ENTRY(ID_LOWER, "-0") "]", 1, {{id_bytes, 0}}},
    {"version 2^63-1", "[" ENTRY(ID_LOWER, "9223372036854775807") "]", 1, {{id_bytes, INT64_MAX}}},
    {"version 2^63", "[" ENTRY(ID_LOWER, "9223372036854775808") "]", 0, {{0}}},
    {"version 2^63 next to a good one",
     "[" ENTRY(ID_LOWER, "9223372036854775808") "," ENTRY(ID_OTHER, "12") "]",
     1,
     {{other_bytes, 12}}},
    {"version 2^64", "[" ENTRY(ID_LOWER, "18446744073709551616") "]", 0, {{0}}},
    {"version -1", "[" ENTRY(ID_LOWER, "-1") "]", 0, {{0}}},
    {"version -2^63", "[" ENTRY(ID_LOWER, "-9223372036854775808") "]", 0, {{0}}},
    {"version 1.5", "[" ENTRY(ID_LOWER, "1.5") "]", 0, {{0}}},
    {"version 1e3", "[" ENTRY(ID_LOWER, "1e3") "]", 1, {{id_bytes, 1000}}},
    {"version 5.0", "[" ENTRY(ID_LOWER, "5.0") "]", 1, {{id_bytes, 5}}},
    {"version -0.0", "[" ENTRY(ID_LOWER, "-0.0") "]", 1, {{id_bytes, 0}}},
    {"version 2^53 as real",
     "[" ENTRY(ID_LOWER, "9007199254740992.0") "]",
     1,
     {{id_bytes, 9007199254740992LL}}},
    {"version 2^53+2 as real", "[" ENTRY(ID_LOWER, "9007199254740994.0") "]", 0, {{0}}},
    {"version 1e300", "[" ENTRY(ID_LOWER, "1e300") "]", 0, {{0}}},
    {"version -1.0", "[" ENTRY(ID_LOWER, "-1.0") "]", 0, {{0}}},
    {"version 1e-300", "[" ENTRY(ID_LOWER, "1e-300") "]", 0, {{0}}},
    {"version string", "[" ENTRY(ID_LOWER, "\"5\"") "]", 0, {{0}}},
    {"version null", "[" ENTRY(ID_LOWER, "null") "]", 0, {{0}}},
    {"version bool", "[" ENTRY(ID_LOWER, "true") "]", 0, {{0}}},
    {"version array", "[" ENTRY(ID_LOWER, "[5]") "]", 0, {{0}}},
    {"version object", "[" ENTRY(ID_LOWER, "{}") "]", 0, {{0}}},
    {"no version", "[{\"channelID\":\"" ID_LOWER "\"}]", 0, {{0}}},
    {"Version key", "[{\"channelID\":\"" ID_LOWER "\",\"Version\":1}]", 0, {{0}}},
    {"no channelID", "[{\"version\":1}]", 0, {{0}}},
    {"channelId key", "[{\"channelId\":\"" ID_LOWER "\",\"version\":1}]", 0, {{0}}},
    {"channelID number", "[{\"channelID\":1,\"version\":1}]", 0, {{0}}},
    {"channelID null", "[{\"channelID\":null,\"version\":1}]", 0, {{0}}},
    {"channelID empty", "[" ENTRY("", "1") "]", 0, {{0}}},
    {"channelID invalid", "[" ENTRY("zz", "1") "]", 0, {{0}}},
    {"entries not objects", "[1,\"x\",null,true,[],[{}]]", 0, {{0}}},
    {"mixed good and bad",
     "[5," ENTRY("bad", "1") "," ENTRY(ID_LOWER, "3") ",{}," ENTRY(ID_OTHER, "-4") "," ENTRY(
         ID_OTHER, "4") ","
                        "{\"channelID\":\"" ID_DASHED "\",\"version\":9,\"extra\":[1]}]",
     3,
     {{id_bytes, 3}, {other_bytes, 4}, {id_bytes, 9}}},
    {"same channel twice",
     "[" ENTRY(ID_LOWER, "1") "," ENTRY(ID_DASHED, "2") "]",
     2,
     {{id_bytes, 1}, {id_bytes, 2}}},
};

static void test_ack_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(ack_rows); i++) {
        const struct ack_row *row = &ack_rows[i];
        char text[1024];
        struct message m;
        enum message_result r;
        int n =
            snprintf(text, sizeof(text), "{\"messageType\":\"ack\",\"updates\":%s}", row->updates);

        assert_true(n > 0 && (size_t)n < sizeof(text));
        r = message_parse(text, (size_t)n, &m);
        if (r != MESSAGE_OK)
            fail_msg("row \"%s\": got %s", row->name, result_name(r));
        assert_int_equal(m.type, MESSAGE_ACK);
        if (m.n_acks != row->n)
            fail_msg("row \"%s\": %zu acks, want %zu", row->name, m.n_acks, row->n);
        if (row->n == 0 && m.acks != NULL)
            fail_msg("row \"%s\": acks not NULL", row->name);
        for (size_t j = 0; j < row->n; j++) {
            if (memcmp(m.acks[j].chid, row->want[j].chid, IDS_BYTES) != 0)
                fail_msg("row \"%s\": ack %zu has the wrong channel", row->name, j);
            if (m.acks[j].version != row->want[j].version)
                fail_msg("row \"%s\": ack %zu version %lld, want %lld", row->name, j,
                         (long long)m.acks[j].version, (long long)row->want[j].version);
        }
        message_clear(&m);
    }
}

/* An ack of many entries, most of them junk: only the good ones are kept. */
static void test_ack_many(void **state)
{
    size_t cap = 4000 * 80, off;
    char *text = malloc(cap);
    struct message m;

    assert_non_null(text);
    off = (size_t)sprintf(text, "{\"messageType\":\"ack\",\"updates\":[");
    for (size_t i = 0; i < 4000; i++) {
        if (i % 100 == 0)
            off += (size_t)sprintf(text + off, "%s{\"channelID\":\"%032zx\",\"version\":%zu}",
                                   i ? "," : "", i, i);
        else
            off += (size_t)sprintf(text + off, "%s0", i ? "," : "");
    }
    off += (size_t)sprintf(text + off, "]}");
    assert_true(off < cap);

    assert_int_equal(message_parse(text, off, &m), MESSAGE_OK);
    assert_int_equal(m.n_acks, 40);
    for (size_t j = 0; j < m.n_acks; j++) {
        assert_int_equal(m.acks[j].version, (int64_t)(j * 100));
        assert_int_equal(m.acks[j].chid[IDS_BYTES - 1], (uint8_t)(j * 100));
    }
    message_clear(&m);
    free(text);
}

/* ------------------------------------------------------------------------------------- */
/* message_clear.                                                                         */

static void test_clear(void **state)
{
    struct message m;

    memset(&m, 0, sizeof(m));
    message_clear(&m);
    message_clear(NULL);

    assert_int_equal(
        message_parse(TXT("{\"messageType\":\"ack\",\"updates\":[" ENTRY(ID_LOWER, "1") "]}"), &m),
        MESSAGE_OK);
    assert_non_null(m.acks);
    message_clear(&m);
    assert_null(m.root);
    assert_null(m.acks);
    assert_int_equal(m.n_acks, 0);
    assert_int_equal(m.type, 0);
    message_clear(&m);
}

/* ------------------------------------------------------------------------------------- */
/* Builders: exact texts.                                                                 */

/* Checks a builder's text and the length it reported through *got_len, then frees it. */
static void expect_text(char *got, const size_t *got_len, const char *want)
{
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(*got_len, strlen(want));
    free(got);
}

static void test_hello_reply(void **state)
{
    size_t len = 0;

    expect_text(message_hello_reply(ID_DASHED, &len), &len,
                "{\"messageType\":\"hello\",\"status\":200,\"uaid\":\"" ID_DASHED "\"}");
    expect_text(message_hello_reply("", &len), &len,
                "{\"messageType\":\"hello\",\"status\":200,\"uaid\":\"\"}");
    expect_text(message_hello_reply("a\"b\\c/d\n\x01", &len), &len,
                "{\"messageType\":\"hello\",\"status\":200,\"uaid\":\"a\\\"b\\\\c/d\\n\\u0001\"}");
    assert_null(message_hello_reply(NULL, &len));
    assert_null(message_hello_reply("bad \xff", &len));

    /* len may be NULL. */
    char *text = message_hello_reply("x", NULL);

    assert_string_equal(text, "{\"messageType\":\"hello\",\"status\":200,\"uaid\":\"x\"}");
    free(text);
}

struct register_row {
    int status;
    const char *endpoint;
    const char *want;
};

#define REG_HEAD "{\"messageType\":\"register\",\"channelID\":\"" ID_DASHED "\",\"status\":"

static const struct register_row register_rows[] = {
    {200, "http://localhost:8080/update/AbC-_x",
     REG_HEAD "200,\"pushEndpoint\":\"http://localhost:8080/update/AbC-_x\"}"},
    {200, "https://push.example.com/update/\xc3\xa9",
     REG_HEAD "200,\"pushEndpoint\":\"https://push.example.com/update/\xc3\xa9\"}"},
    {413, NULL, REG_HEAD "413,\"error\":\"Too Many Channels\"}"},
    {401, "ignored", REG_HEAD "401,\"error\":\"Invalid Command\"}"},
    {503, NULL, REG_HEAD "503,\"error\":\"Service Unavailable\"}"},
    {500, NULL, REG_HEAD "500,\"error\":\"An unexpected error occurred\"}"},
    {404, NULL, REG_HEAD "404,\"error\":\"An unexpected error occurred\"}"},
};

static void test_register_reply(void **state)
{
    for (size_t i = 0; i < N_ELEMS(register_rows); i++) {
        size_t len = 0;

        expect_text(message_register_reply(ID_DASHED, register_rows[i].status,
                                           register_rows[i].endpoint, &len),
                    &len, register_rows[i].want);
    }
    assert_null(message_register_reply(NULL, 200, "http://x/", NULL));
    assert_null(message_register_reply(ID_LOWER, 200, NULL, NULL));
    assert_null(message_register_reply(ID_LOWER, 200, "http://x/\xc3", NULL));
    assert_null(message_register_reply("\xff", 413, NULL, NULL));
}

static void test_unregister_reply(void **state)
{
    size_t len = 0;

    expect_text(message_unregister_reply(ID_LOWER, &len), &len,
                "{\"messageType\":\"unregister\",\"channelID\":\"" ID_LOWER "\",\"status\":200}");
    expect_text(message_unregister_reply(ID_DASHED, &len), &len,
                "{\"messageType\":\"unregister\",\"channelID\":\"" ID_DASHED "\",\"status\":200}");
    assert_null(message_unregister_reply(NULL, &len));
    assert_null(message_unregister_reply("\x80", &len));
}

static void test_notification(void **state)
{
    static const char data[] = "he said \"hi\"\\\n\0\xc3\xa9\xf0\x9f\x98\x80/";
    const struct message_update one[] = {{ID_DASHED, 42, NULL, 0}};
    const struct message_update many[] = {
        {ID_LOWER, 0, NULL, 0},
        {ID_DASHED, INT64_MAX, data, sizeof(data) - 1},
        {ID_OTHER, 5, "", 0},
        {ID_OTHER, 6, "abc", 2},
    };
    size_t len = 0;

    expect_text(message_notification(one, 1, &len), &len,
                "{\"messageType\":\"notification\",\"updates\":[{\"channelID\":\"" ID_DASHED
                "\",\"version\":42}]}");
    expect_text(message_notification(many, N_ELEMS(many), &len), &len,
                "{\"messageType\":\"notification\",\"updates\":["
                "{\"channelID\":\"" ID_LOWER "\",\"version\":0},"
                "{\"channelID\":\"" ID_DASHED "\",\"version\":9223372036854775807,"
                "\"data\":\"he said \\\"hi\\\"\\\\\\n\\u0000\xc3\xa9\xf0\x9f\x98\x80/\"},"
                "{\"channelID\":\"" ID_OTHER "\",\"version\":5,\"data\":\"\"},"
                "{\"channelID\":\"" ID_OTHER "\",\"version\":6,\"data\":\"ab\"}]}");
}

static void test_notification_errors(void **state)
{
    const struct message_update bad_data[] = {
        {ID_LOWER, 1, NULL, 0},
        {ID_LOWER, 2, "ok\xff", 3},
    };
    const struct message_update cut_utf8[] = {{ID_LOWER, 1, "\xc3\xa9", 1}};
    const struct message_update no_chid[] = {{ID_LOWER, 1, NULL, 0}, {NULL, 2, NULL, 0}};
    const struct message_update bad_chid[] = {{"\xfe", 1, NULL, 0}};
    size_t len = 0;

    assert_null(message_notification(bad_data, N_ELEMS(bad_data), &len));
    assert_null(message_notification(cut_utf8, 1, &len));
    assert_null(message_notification(no_chid, N_ELEMS(no_chid), &len));
    assert_null(message_notification(bad_chid, 1, &len));
    assert_null(message_notification(bad_data, 0, &len));
    assert_null(message_notification(NULL, 1, &len));
}

/* SPEC §3: every version up to 2^63-1 survives a trip through the text exactly. */
static void test_version_round_trip(void **state)
{
    static const int64_t versions[] = {
        0,        1, 9007199254740992LL, 9007199254740993LL, 1234567890123456789LL, INT64_MAX - 1,
        INT64_MAX};

    for (size_t i = 0; i < N_ELEMS(versions); i++) {
        const struct message_update u = {ID_LOWER, versions[i], NULL, 0};
        size_t len;
        char *text = message_notification(&u, 1, &len);
        char ack[256];
        struct message m;
        json_t *root;
        json_error_t err;
        int n;

        assert_non_null(text);
        root = json_loadb(text, len, 0, &err);
        assert_non_null(root);
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(json_object_get(root, "updates"), 0), "version")),
                         versions[i]);
        json_decref(root);
        free(text);

        /* The device's ack of that version parses back to it. */
        n = snprintf(ack, sizeof(ack),
                     "{\"messageType\":\"ack\",\"updates\":[{\"channelID\":\"%s\","
                     "\"version\":%lld}]}",
                     ID_LOWER, (long long)versions[i]);
        assert_int_equal(message_parse(ack, (size_t)n, &m), MESSAGE_OK);
        assert_int_equal(m.n_acks, 1);
        assert_true(m.acks[0].version == versions[i]);
        message_clear(&m);
    }
}

/* ------------------------------------------------------------------------------------- */
/* Error replies: the request echoed with status and error.                               */

struct error_row {
    const char *name;
    const char *request; /* NULL: no request */
    int status;
    const char *want;
};

static const struct error_row error_rows[] = {
    {"unknown type lowered", "{\"messageType\":\"FOO\",\"x\":1}", 401,
     "{\"messageType\":\"foo\",\"x\":1,\"status\":401,\"error\":\"Invalid Command\"}"},
    {"fields preserved in order",
     "{\"z\":[1,{\"y\":null,\"b\":true}],\"messageType\":\"REGISTER\",\"channelID\":\"bad\","
     "\"a\":\"\\u00e9\\u0000\",\"r\":1.5}",
     401,
     "{\"z\":[1,{\"y\":null,\"b\":true}],\"messageType\":\"register\",\"channelID\":\"bad\","
     "\"a\":\"\xc3\xa9\\u0000\",\"r\":1.5,\"status\":401,\"error\":\"Invalid Command\"}"},
    {"ack echoes updates",
     "{\"messageType\":\"ACK\",\"updates\":[{\"channelID\":\"" ID_LOWER "\",\"version\":7}]}", 401,
     "{\"messageType\":\"ack\",\"updates\":[{\"channelID\":\"" ID_LOWER "\",\"version\":7}],"
     "\"status\":401,\"error\":\"Invalid Command\"}"},
    {"status and error overwritten in place",
     "{\"status\":\"x\",\"messageType\":\"Hello\",\"error\":7,\"channelIDs\":[]}", 503,
     "{\"status\":503,\"messageType\":\"hello\",\"error\":\"Service Unavailable\","
     "\"channelIDs\":[]}"},
    {"non-string messageType kept", "{\"messageType\":5}", 401,
     "{\"messageType\":5,\"status\":401,\"error\":\"Invalid Command\"}"},
    {"null messageType kept", "{\"messageType\":null,\"q\":{}}", 401,
     "{\"messageType\":null,\"q\":{},\"status\":401,\"error\":\"Invalid Command\"}"},
    {"no messageType", "{\"messagetype\":\"HELLO\"}", 401,
     "{\"messagetype\":\"HELLO\",\"status\":401,\"error\":\"Invalid Command\"}"},
    {"only ASCII lowered", "{\"messageType\":\"H\xc3\x89LLO\\u0000X\"}", 401,
     "{\"messageType\":\"h\xc3\x89llo\\u0000x\",\"status\":401,\"error\":\"Invalid Command\"}"},
    {"empty messageType", "{\"messageType\":\"\"}", 401,
     "{\"messageType\":\"\",\"status\":401,\"error\":\"Invalid Command\"}"},
    {"500", "{\"messageType\":\"hello\",\"channelIDs\":[]}", 500,
     "{\"messageType\":\"hello\",\"channelIDs\":[],\"status\":500,"
     "\"error\":\"An unexpected error occurred\"}"},
    {"integer over 64 bits echoed as a real",
     "{\"messageType\":\"X\",\"big\":99999999999999999999,\"n\":1}", 401,
     "{\"messageType\":\"x\",\"big\":1e20,\"n\":1.0,\"status\":401,"
     "\"error\":\"Invalid Command\"}"},
    {"no request", NULL, 401, "{\"status\":401,\"error\":\"Invalid Command\"}"},
    {"no request, 503", NULL, 503, "{\"status\":503,\"error\":\"Service Unavailable\"}"},
};

static void test_error_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(error_rows); i++) {
        const struct error_row *row = &error_rows[i];
        struct message m;
        char *before = NULL, *got;
        size_t len = 0;

        memset(&m, 0, sizeof(m));
        if (row->request) {
            enum message_result r = message_parse(row->request, strlen(row->request), &m);

            if (r == MESSAGE_E_JSON)
                fail_msg("row \"%s\": request does not parse", row->name);
            before = json_dumps(m.root, JSON_COMPACT);
            assert_non_null(before);
        }
        got = message_error(m.root, row->status, &len);
        if (!got || strcmp(got, row->want) != 0)
            fail_msg("row \"%s\":\n got  %s\n want %s", row->name, got ? got : "(NULL)", row->want);
        assert_int_equal(len, strlen(row->want));
        if (before) {
            /* The request itself is left as it was. */
            char *after = json_dumps(m.root, JSON_COMPACT);

            assert_string_equal(before, after);
            free(after);
            free(before);
        }
        free(got);
        message_clear(&m);
    }
}

static void test_error_non_object(void **state)
{
    json_t *array = json_pack("[i]", 1);
    size_t len;

    assert_non_null(array);
    expect_text(message_error(array, 401, &len), &len,
                "{\"status\":401,\"error\":\"Invalid Command\"}");
    json_decref(array);
}

struct error_text_row {
    int status;
    const char *text;
};

static const struct error_text_row error_text_rows[] = {
    {401, "Invalid Command"},
    {413, "Too Many Channels"},
    {503, "Service Unavailable"},
    {500, "An unexpected error occurred"},
    {200, "An unexpected error occurred"},
    {400, "An unexpected error occurred"},
    {0, "An unexpected error occurred"},
    {-1, "An unexpected error occurred"},
};

static void test_error_text(void **state)
{
    for (size_t i = 0; i < N_ELEMS(error_text_rows); i++)
        assert_string_equal(message_error_text(error_text_rows[i].status), error_text_rows[i].text);
}

/* ------------------------------------------------------------------------------------- */
/* Allocation failures inside jansson: a clean NULL or E_JSON, never a crash or a leak.   */

static long alloc_budget = -1; /* allocations left before failing; -1: unlimited */

static void *budget_malloc(size_t size)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(size);
}

static void budget_free(void *ptr)
{
    free(ptr);
}

/*
 * Runs every builder and a parse with n jansson allocations allowed; returns whether every
 * call succeeded. A call that fails must fail cleanly. Texts with numbers longer than 16
 * characters are left out: jansson 2.14 itself aborts (an assert in lex_unget_unsave) when
 * an allocation fails while it lexes one.
 */
static bool run_with_budget(long n)
{
    static const char ack[] =
        "{\"messageType\":\"ack\",\"updates\":[" ENTRY(ID_LOWER, "1") "," ENTRY(ID_OTHER, "2") "]}";
    static const char bad[] = "{\"messageType\":\"Foo\",\"x\":[1,{\"y\":\"z\"}]}";
    const struct message_update ups[] = {{ID_LOWER, 1, "d", 1}, {ID_OTHER, 2, NULL, 0}};
    bool all = true;
    struct message m;
    enum message_result r;
    size_t len;
    char *text;

    json_set_alloc_funcs(budget_malloc, budget_free);

    alloc_budget = n;
    r = message_parse(ack, sizeof(ack) - 1, &m);
    alloc_budget = -1;
    if (r == MESSAGE_OK) {
        assert_int_equal(m.n_acks, 2);
        message_clear(&m);
    } else {
        assert_int_equal(r, MESSAGE_E_JSON);
        assert_null(m.root);
        all = false;
    }

    alloc_budget = -1;
    assert_int_equal(message_parse(bad, sizeof(bad) - 1, &m), MESSAGE_E_INVALID);
    alloc_budget = n;
    text = message_error(m.root, 401, &len);
    alloc_budget = -1;
    if (text)
        expect_text(text, &len,
                    "{\"messageType\":\"foo\",\"x\":[1,{\"y\":\"z\"}],\"status\":401,"
                    "\"error\":\"Invalid Command\"}");
    else
        all = false;
    message_clear(&m);

    alloc_budget = n;
    text = message_hello_reply(ID_LOWER, &len);
    alloc_budget = -1;
    if (text)
        expect_text(text, &len,
                    "{\"messageType\":\"hello\",\"status\":200,\"uaid\":\"" ID_LOWER "\"}");
    else
        all = false;

    alloc_budget = n;
    text = message_register_reply(ID_LOWER, 413, NULL, &len);
    alloc_budget = -1;
    if (text)
        free(text);
    else
        all = false;

    alloc_budget = n;
    text = message_unregister_reply(ID_LOWER, &len);
    alloc_budget = -1;
    if (text)
        free(text);
    else
        all = false;

    alloc_budget = n;
    text = message_notification(ups, N_ELEMS(ups), &len);
    alloc_budget = -1;
    if (text)
        expect_text(text, &len,
                    "{\"messageType\":\"notification\",\"updates\":[{\"channelID\":\"" ID_LOWER
                    "\",\"version\":1,\"data\":\"d\"},{\"channelID\":\"" ID_OTHER
                    "\",\"version\":2}]}");
    else
        all = false;

    json_set_alloc_funcs(malloc, free);
    return all;
}

static void test_alloc_failures(void **state)
{
    long n;

    for (n = 0; n < 1000; n++) {
        if (run_with_budget(n))
            break;
    }
    /* Some budgets failed, and a large enough one succeeds. */
    assert_true(n > 0);
    assert_true(n < 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_null_arguments),
        cmocka_unit_test(test_parse_uses_len),
        cmocka_unit_test(test_hello_table),
        cmocka_unit_test(test_hello_huge_uaid),
        cmocka_unit_test(test_hello_many_channel_ids),
        cmocka_unit_test(test_channel_table),
        cmocka_unit_test(test_huge_message),
        cmocka_unit_test(test_ack_table),
        cmocka_unit_test(test_ack_many),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_hello_reply),
        cmocka_unit_test(test_register_reply),
        cmocka_unit_test(test_unregister_reply),
        cmocka_unit_test(test_notification),
        cmocka_unit_test(test_notification_errors),
        cmocka_unit_test(test_version_round_trip),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_error_non_object),
        cmocka_unit_test(test_error_text),
        cmocka_unit_test(test_alloc_failures),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
