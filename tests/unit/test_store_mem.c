/*
 * Unit tests of the in-process store (store_mem.c behind store.c): every operation and rule of
 * the store.h contract, expiry through a fake clock (lazy, by the incremental sweep, and by
 * the backend's timer), completion order and timing (never inside store_submit), closing with
 * requests outstanding, allocation failures (STORE_ERROR, never a crash or a leak), and a
 * randomized comparison against a simple reference model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/*
 * The backend's .c is included (h2o style) so that its allocations can be made to fail:
 * the fail_at-th malloc/calloc from arming on returns NULL.
 */
static long alloc_calls;
static long alloc_fail_at;

static bool alloc_should_fail(void)
{
    alloc_calls++;
    return alloc_fail_at && alloc_calls == alloc_fail_at;
}

static void *fake_malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n);
}

static void *fake_calloc(size_t n, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(n, size);
}

static void fail_alloc_at(long n)
{
    alloc_calls = 0;
    alloc_fail_at = n;
}

#include "../../src/store_backend.h"
#define malloc fake_malloc
#define calloc fake_calloc
#include "../../src/store_mem.c"
#undef malloc
#undef calloc

#define MAXCH 3
#define LIVE  10000
#define DEL   5000

static const struct store_limits limits = {
    .max_channels = MAXCH,
    .timeout_live_ms = LIVE,
    .timeout_del_ms = DEL,
};

struct fx {
    uv_loop_t loop;
    struct store *st;
    uint64_t now;
    bool closed;
    bool in_submit;
    size_t n_completed;
    uint64_t order[1024]; /* owners in completion order */
    struct store_req *last;
    bool chain; /* the next completion submits one more request */
    bool free_in_cb;
};

static struct fx *cur;
static uv_thread_t loop_thread;

static uint64_t fake_now(void *arg)
{
    return ((struct fx *)arg)->now;
}

static void on_done(struct store_req *req)
{
    struct fx *fx = cur;
    uv_thread_t self = uv_thread_self();
    assert_false(fx->in_submit);
    assert_true(uv_thread_equal(&self, &loop_thread));
    if (fx->n_completed < 1024)
        fx->order[fx->n_completed] = req->owner;
    fx->n_completed++;
    fx->last = req;
    if (fx->chain) {
        fx->chain = false;
        struct store_req *next = store_req_new(STORE_FETCH);
        next->owner = 1000;
        next->done = on_done;
        fx->in_submit = true;
        store_submit(fx->st, next);
        fx->in_submit = false;
    }
    if (fx->free_in_cb)
        store_req_free(req);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->st = store_mem_new(&fx->loop, &limits);
    assert_non_null(fx->st);
    fx->now = 1000000;
    assert_int_equal(store_mem_set_clock(fx->st, fake_now, fx), 0);
    loop_thread = uv_thread_self();
    cur = fx;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    if (!fx->closed)
        store_close(fx->st);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static void make_id(uint8_t out[IDS_BYTES], unsigned n)
{
    memset(out, 0, IDS_BYTES);
    out[0] = (uint8_t)n;
    out[1] = (uint8_t)(n >> 8);
    out[2] = (uint8_t)(n >> 16);
    out[15] = 0xee;
}

static unsigned id_num(const uint8_t id[IDS_BYTES])
{
    return id[0] | (unsigned)id[1] << 8 | (unsigned)id[2] << 16;
}

/* Submits req, checks that it does not complete inside store_submit(), runs the loop. */
static struct store_req *run(struct fx *fx, struct store_req *req)
{
    size_t before = fx->n_completed;
    req->done = on_done;
    fx->in_submit = true;
    store_submit(fx->st, req);
    fx->in_submit = false;
    assert_int_equal(fx->n_completed, before);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, before + 1);
    assert_ptr_equal(fx->last, req);
    return req;
}

static struct store_req *req_new(enum store_op op, unsigned uaid, unsigned chid)
{
    struct store_req *req = store_req_new(op);
    assert_non_null(req);
    make_id(req->uaid, uaid);
    make_id(req->chid, chid);
    return req;
}

/* uaid < 0: the client named no valid uaid. */
static struct store_req *hello(struct fx *fx, int uaid, size_t n_channels, unsigned new_uaid)
{
    struct store_req *req = req_new(STORE_HELLO, uaid < 0 ? 0 : (unsigned)uaid, 0);
    req->uaid_valid = uaid >= 0;
    req->n_channels = n_channels;
    make_id(req->new_uaid, new_uaid);
    run(fx, req);
    assert_int_equal(req->status, STORE_OK);
    return req;
}

/* Says hello and returns whether the store reset the uaid. */
static bool hello_reset(struct fx *fx, int uaid, size_t n_channels, unsigned new_uaid)
{
    struct store_req *req = hello(fx, uaid, n_channels, new_uaid);
    bool reset = req->reset;
    store_req_free(req);
    return reset;
}

static enum store_status simple(struct fx *fx, enum store_op op, unsigned uaid, unsigned chid)
{
    struct store_req *req = run(fx, req_new(op, uaid, chid));
    enum store_status status = req->status;
    assert_int_equal(req->n_updates, 0);
    store_req_free(req);
    return status;
}

static enum store_status reg(struct fx *fx, unsigned uaid, unsigned chid)
{
    return simple(fx, STORE_REGISTER, uaid, chid);
}

static enum store_status unreg(struct fx *fx, unsigned uaid, unsigned chid)
{
    return simple(fx, STORE_UNREGISTER, uaid, chid);
}

static struct store_req *update(struct fx *fx, unsigned uaid, unsigned chid, int64_t version,
                                const char *data)
{
    struct store_req *req = req_new(STORE_UPDATE, uaid, chid);
    req->version = version;
    if (data) {
        req->data = strdup(data);
        req->data_len = strlen(data);
    }
    return run(fx, req);
}

static enum store_status update_status(struct fx *fx, unsigned uaid, unsigned chid, int64_t version)
{
    struct store_req *req = update(fx, uaid, chid, version, NULL);
    enum store_status status = req->status;
    assert_int_equal(req->n_updates, status == STORE_OK ? 1 : 0);
    store_req_free(req);
    return status;
}

static void ack(struct fx *fx, unsigned uaid, unsigned chid, int64_t version)
{
    struct store_req *req = req_new(STORE_ACK, uaid, 0);
    req->acks = calloc(1, sizeof(*req->acks));
    make_id(req->acks[0].chid, chid);
    req->acks[0].version = version;
    req->n_acks = 1;
    run(fx, req);
    assert_int_equal(req->status, STORE_OK);
    store_req_free(req);
}

static struct store_req *fetch(struct fx *fx, unsigned uaid)
{
    struct store_req *req = run(fx, req_new(STORE_FETCH, uaid, 0));
    assert_int_equal(req->status, STORE_OK);
    return req;
}

static const struct store_update *find_update(const struct store_req *req, unsigned chid)
{
    for (size_t i = 0; i < req->n_updates; i++)
        if (id_num(req->updates[i].chid) == chid)
            return &req->updates[i];
    return NULL;
}

static size_t fetch_count(struct fx *fx, unsigned uaid)
{
    struct store_req *req = fetch(fx, uaid);
    size_t n = req->n_updates;
    store_req_free(req);
    return n;
}

/* The version pending on (uaid, chid), or -1. */
static int64_t pending_version(struct fx *fx, unsigned uaid, unsigned chid)
{
    struct store_req *req = fetch(fx, uaid);
    const struct store_update *u = find_update(req, chid);
    int64_t v = u ? u->version : -1;
    store_req_free(req);
    return v;
}

static struct store_mem_stats stats(struct fx *fx)
{
    struct store_mem_stats s;
    assert_int_equal(store_mem_stats(fx->st, &s), 0);
    return s;
}

/* ---- hello ---- */

static void test_name(void **state)
{
    struct fx *fx = *state;
    assert_string_equal(store_name(fx->st), "memory");
}

static void test_hello_invalid_uaid_resets(void **state)
{
    struct fx *fx = *state;
    assert_true(hello_reset(fx, -1, 0, 50));
    assert_true(hello_reset(fx, -1, 5, 51));
    /* The new uaid is known now: a hello naming it with channels keeps it. */
    assert_false(hello_reset(fx, 50, 2, 99));
    assert_false(hello_reset(fx, 51, MAXCH, 99));
    assert_int_equal(stats(fx).uaids, 2);
}

static void test_hello_unknown(void **state)
{
    struct fx *fx = *state;
    /* Unknown with channels: reset. Unknown without channels: kept, and known from then on. */
    assert_true(hello_reset(fx, 1, 1, 60));
    assert_false(hello_reset(fx, 2, 0, 61));
    assert_false(hello_reset(fx, 2, 2, 62));
    struct store_mem_stats s = stats(fx);
    assert_int_equal(s.uaids, 2); /* 60 and 2; 1 was never stored */
    assert_int_equal(s.dropped, 0);
}

static void test_hello_too_many_channels(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    assert_false(hello_reset(fx, 1, MAXCH, 91)); /* at the limit: kept */

    struct store_req *req = hello(fx, 1, MAXCH + 1, 92);
    assert_true(req->reset);
    assert_int_equal(req->n_updates, 0); /* the new uaid has nothing pending */
    store_req_free(req);
    assert_int_equal(stats(fx).dropped, 1);

    /* The old uaid's endpoints answer GONE within timeout_del, also for unknown channels. */
    assert_int_equal(update_status(fx, 1, 10, 2), STORE_GONE);
    assert_int_equal(update_status(fx, 1, 11, 2), STORE_GONE);
    assert_int_equal(fetch_count(fx, 1), 0);
    ack(fx, 1, 10, 100);                          /* no effect, no error */
    assert_int_equal(unreg(fx, 1, 10), STORE_OK); /* idem */
    fx->now += DEL - 1;
    assert_int_equal(update_status(fx, 1, 10, 3), STORE_GONE);
    fx->now += 1;
    assert_int_equal(update_status(fx, 1, 10, 3), STORE_OK); /* an unknown uaid now */

    /* Too many channels for an unknown uaid: reset, no tombstone. */
    assert_true(hello_reset(fx, 7, MAXCH + 5, 93));
    assert_int_equal(update_status(fx, 7, 1, 1), STORE_OK);
}

static void test_hello_dropped_uaid_is_unknown(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_true(hello_reset(fx, 1, MAXCH + 1, 91));
    /* Dropped = unknown: with channels, another reset (the tombstone stays). */
    assert_true(hello_reset(fx, 1, 1, 92));
    assert_int_equal(update_status(fx, 1, 5, 1), STORE_GONE);
    /* Without channels the uaid is taken again, with nothing from before. */
    assert_false(hello_reset(fx, 1, 0, 93));
    assert_int_equal(update_status(fx, 1, 5, 1), STORE_OK);
    assert_int_equal(stats(fx).dropped, 0);
}

static void test_hello_returns_pending(void **state)
{
    struct fx *fx = *state;
    const struct ids_spelling sp = {.upper = 0x80000001u, .dashed = 1};
    assert_false(hello_reset(fx, 1, 0, 90));
    struct store_req *r = req_new(STORE_REGISTER, 1, 10);
    r->chid_sp = sp;
    run(fx, r);
    assert_int_equal(r->status, STORE_OK);
    store_req_free(r);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    assert_int_equal(reg(fx, 1, 12), STORE_OK);
    store_req_free(update(fx, 1, 10, 7, "hello data"));
    store_req_free(update(fx, 1, 11, 8, NULL));

    struct store_req *req = hello(fx, 1, 3, 91);
    assert_false(req->reset);
    assert_int_equal(req->n_updates, 2);
    const struct store_update *u = find_update(req, 10);
    assert_non_null(u);
    assert_int_equal(u->version, 7);
    assert_int_equal(u->data_len, 10);
    assert_memory_equal(u->data, "hello data", 10);
    assert_int_equal(u->chid_sp.upper, sp.upper);
    assert_int_equal(u->chid_sp.dashed, 1);
    u = find_update(req, 11);
    assert_non_null(u);
    assert_int_equal(u->version, 8);
    assert_null(u->data);
    assert_int_equal(u->data_len, 0);
    store_req_free(req);
}

static void test_hello_lifetime(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    fx->now += LIVE - 1;
    assert_false(hello_reset(fx, 1, 2, 91)); /* still known; refreshed */
    fx->now += LIVE - 1;
    assert_false(hello_reset(fx, 1, 2, 92));
    fx->now += LIVE;
    assert_true(hello_reset(fx, 1, 2, 93)); /* expired: unknown */
}

static void test_activity_refreshes_lifetime(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    /* Every operation on a live uaid extends its life by timeout_live. */
    fx->now += LIVE - 1;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    fx->now += LIVE - 1;
    ack(fx, 1, 10, 1);
    fx->now += LIVE - 1;
    assert_int_equal(fetch_count(fx, 1), 0);
    fx->now += LIVE - 1;
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    fx->now += LIVE - 1;
    assert_false(hello_reset(fx, 1, 1, 91));
    assert_int_equal(pending_version(fx, 1, 10), 1);
    fx->now += 1;
    assert_int_equal(pending_version(fx, 1, 10), -1); /* the update expired; the uaid lives */
    assert_false(hello_reset(fx, 1, 1, 92));
}

/* ---- register ---- */

static void test_register(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    for (unsigned c = 10; c < 10 + MAXCH; c++)
        assert_int_equal(reg(fx, 1, c), STORE_OK);
    assert_int_equal(reg(fx, 1, 10), STORE_OK); /* idempotent, also at the limit */
    assert_int_equal(reg(fx, 1, 99), STORE_TOO_MANY);
    assert_int_equal(stats(fx).registered, MAXCH);
    /* Unregistering makes room. */
    assert_int_equal(unreg(fx, 1, 11), STORE_OK);
    assert_int_equal(stats(fx).registered, MAXCH - 1);
    assert_int_equal(reg(fx, 1, 99), STORE_OK);
    assert_int_equal(reg(fx, 1, 11), STORE_TOO_MANY); /* deleted, and no room */
    assert_int_equal(unreg(fx, 1, 99), STORE_OK);
    /* Registering a deleted channel makes it registered again: updates are accepted. */
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_GONE);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_OK);
    assert_int_equal(stats(fx).registered, MAXCH);
    /* Another uaid has its own count. */
    assert_int_equal(reg(fx, 2, 10), STORE_OK);
}

static void test_register_latest_spelling(void **state)
{
    struct fx *fx = *state;
    struct store_req *r = req_new(STORE_REGISTER, 1, 10);
    r->chid_sp.dashed = 1;
    store_req_free(run(fx, r));
    r = req_new(STORE_REGISTER, 1, 10);
    r->chid_sp.upper = 3;
    store_req_free(run(fx, r));
    struct store_req *u = update(fx, 1, 10, 1, NULL);
    assert_int_equal(u->updates[0].chid_sp.dashed, 0);
    assert_int_equal(u->updates[0].chid_sp.upper, 3);
    store_req_free(u);
}

static void test_register_without_hello_and_on_dropped(void **state)
{
    struct fx *fx = *state;
    /* No record (expired while connected): made. */
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_false(hello_reset(fx, 1, 1, 90));
    /* A dropped uaid whose old socket registers: the uaid lives again, empty. */
    assert_true(hello_reset(fx, 1, MAXCH + 1, 91));
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_OK);
    assert_int_equal(stats(fx).dropped, 0);
}

/* ---- unregister ---- */

static void test_unregister(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    store_req_free(update(fx, 1, 10, 5, "d"));
    assert_int_equal(unreg(fx, 1, 10), STORE_OK);
    assert_int_equal(fetch_count(fx, 1), 0); /* pending dropped */
    assert_int_equal(update_status(fx, 1, 10, 6), STORE_GONE);
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_int_equal(unreg(fx, 1, 10), STORE_OK); /* again */
    /* Unknown channel, unknown uaid: OK, and their endpoints answer GONE. */
    assert_int_equal(unreg(fx, 1, 77), STORE_OK);
    assert_int_equal(update_status(fx, 1, 77, 1), STORE_GONE);
    assert_int_equal(unreg(fx, 2, 78), STORE_OK);
    assert_int_equal(update_status(fx, 2, 78, 1), STORE_GONE);
    assert_int_equal(stats(fx).deleted, 3);

    /* The tombstone lasts timeout_del; then the channel is unknown and accepts updates. */
    fx->now += DEL - 1;
    assert_int_equal(update_status(fx, 1, 10, 7), STORE_GONE);
    fx->now += 1;
    assert_int_equal(update_status(fx, 1, 10, 7), STORE_OK);
    assert_int_equal(pending_version(fx, 1, 10), 7);
}

static void test_unregister_unlisted(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK); /* unlisted channel */
    assert_int_equal(unreg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 2), STORE_GONE);
    assert_int_equal(stats(fx).registered, 0);
}

static void test_tombstone_outlives_live(void **state)
{
    struct fx *fx = *state;
    /* With timeout_del > timeout_live, the record lives as long as its tombstones. */
    struct store_limits l = {
        .max_channels = MAXCH, .timeout_live_ms = 1000, .timeout_del_ms = 5000};
    store_set_limits(fx->st, &l);
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(unreg(fx, 1, 10), STORE_OK);
    fx->now += 4999;
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_GONE);
    assert_int_equal(store_mem_sweep(fx->st, SIZE_MAX), 0);
    assert_int_equal(stats(fx).deleted, 1);
    fx->now += 1;
    assert_int_equal(store_mem_sweep(fx->st, SIZE_MAX), 0);
    struct store_mem_stats s = stats(fx);
    assert_int_equal(s.uaids + s.dropped + s.deleted, 0);
}

/* ---- ack ---- */

static void test_ack(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    store_req_free(update(fx, 1, 10, 5, "x"));
    ack(fx, 1, 10, 4); /* older than stored: kept */
    assert_int_equal(pending_version(fx, 1, 10), 5);
    ack(fx, 1, 10, 5); /* equal: removed */
    assert_int_equal(pending_version(fx, 1, 10), -1);
    store_req_free(update(fx, 1, 10, 7, NULL));
    ack(fx, 1, 10, 9); /* newer: removed */
    assert_int_equal(pending_version(fx, 1, 10), -1);
    /* The channel stays registered after an ack. */
    assert_int_equal(stats(fx).registered, 1);
    /* Unknown channel, unknown uaid, empty list: no effect, no error. */
    ack(fx, 1, 55, 1);
    ack(fx, 2, 10, 1);
    struct store_req *req = req_new(STORE_ACK, 1, 0);
    store_req_free(run(fx, req));
    assert_int_equal(stats(fx).uaids, 1); /* acks make no records */
}

static void test_ack_many(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = 100, .timeout_live_ms = LIVE, .timeout_del_ms = DEL};
    store_set_limits(fx->st, &l);
    for (unsigned c = 0; c < 20; c++) {
        assert_int_equal(reg(fx, 1, c), STORE_OK);
        store_req_free(update(fx, 1, c, 10, NULL));
    }
    struct store_req *req = req_new(STORE_ACK, 1, 0);
    req->acks = calloc(20, sizeof(*req->acks));
    req->n_acks = 20;
    for (unsigned c = 0; c < 20; c++) {
        make_id(req->acks[c].chid, c);
        req->acks[c].version = c % 2 ? 10 : 9; /* odd channels acked */
    }
    store_req_free(run(fx, req));
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 10);
    for (size_t i = 0; i < f->n_updates; i++)
        assert_int_equal(id_num(f->updates[i].chid) % 2, 0);
    store_req_free(f);
}

static void test_ack_unlisted_removes_channel(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(update_status(fx, 1, 10, 3), STORE_OK);
    assert_int_equal(stats(fx).pending, 1);
    ack(fx, 1, 10, 3);
    struct store_mem_stats s = stats(fx);
    assert_int_equal(s.pending, 0);
    assert_int_equal(s.registered + s.deleted, 0);
    assert_int_equal(update_status(fx, 1, 10, 4), STORE_OK);
}

/* ---- update ---- */

static void test_update_versions(void **state)
{
    static const struct {
        int64_t version;
        const char *data;
        int64_t expect_version;
        const char *expect_data;
    } steps[] = {
        {5, "five", 5, "five"},
        {3, "three", 5, "five"},            /* older: the newer stays */
        {5, "five again", 5, "five again"}, /* equal: replaces */
        {9, NULL, 9, NULL},
        {INT64_MAX, "max", INT64_MAX, "max"},
        {0, "zero", INT64_MAX, "max"},
    };
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct store_req *req = update(fx, 1, 10, steps[i].version, steps[i].data);
        assert_int_equal(req->status, STORE_OK);
        assert_int_equal(req->n_updates, 1);
        const struct store_update *u = &req->updates[0];
        assert_int_equal(id_num(u->chid), 10);
        assert_true(u->version == steps[i].expect_version);
        if (steps[i].expect_data) {
            assert_int_equal(u->data_len, strlen(steps[i].expect_data));
            assert_memory_equal(u->data, steps[i].expect_data, u->data_len);
            assert_true(u->data != req->data); /* a copy */
        } else {
            assert_null(u->data);
            assert_int_equal(u->data_len, 0);
        }
        store_req_free(req);
    }
    assert_true(pending_version(fx, 1, 10) == INT64_MAX);
}

static void test_update_empty_data_is_none(void **state)
{
    struct fx *fx = *state;
    struct store_req *req = req_new(STORE_UPDATE, 1, 10);
    req->version = 1;
    req->data = strdup("");
    req->data_len = 0;
    run(fx, req);
    assert_int_equal(req->status, STORE_OK);
    assert_null(req->updates[0].data);
    store_req_free(req);
}

static void test_update_big_data(void **state)
{
    struct fx *fx = *state;
    enum { LEN = 100000 };
    struct store_req *req = req_new(STORE_UPDATE, 1, 10);
    req->version = 1;
    req->data = malloc(LEN);
    for (size_t i = 0; i < LEN; i++)
        req->data[i] = (char)('a' + i % 26);
    req->data_len = LEN;
    run(fx, req);
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].data_len, LEN);
    assert_memory_equal(f->updates[0].data, req->data, LEN);
    store_req_free(f);
    store_req_free(req);
}

static void test_update_unknown(void **state)
{
    struct fx *fx = *state;
    /* Unknown uaid and channel (e.g. expired): accepted and stored. */
    struct store_req *req = req_new(STORE_UPDATE, 1, 10);
    req->version = 4;
    req->chid_sp.dashed = 1;
    run(fx, req);
    assert_int_equal(req->status, STORE_OK);
    assert_int_equal(req->updates[0].chid_sp.dashed, 1);
    store_req_free(req);
    struct store_req *h = hello(fx, 1, 2, 90); /* the uaid is known now */
    assert_false(h->reset);
    assert_int_equal(h->n_updates, 1);
    assert_int_equal(h->updates[0].version, 4);
    store_req_free(h);
    /* An unlisted channel does not count against max_channels. */
    for (unsigned c = 20; c < 20 + MAXCH; c++)
        assert_int_equal(reg(fx, 1, c), STORE_OK);
    for (unsigned c = 30; c < 35; c++)
        assert_int_equal(update_status(fx, 1, c, 1), STORE_OK);
    assert_int_equal(fetch_count(fx, 1), 6);
    assert_int_equal(reg(fx, 1, 40), STORE_TOO_MANY);
    /* Registering an unlisted channel keeps its update (and counts it). */
    assert_int_equal(unreg(fx, 1, 20), STORE_OK);
    assert_int_equal(reg(fx, 1, 30), STORE_OK);
    assert_int_equal(pending_version(fx, 1, 30), 1);
    assert_int_equal(reg(fx, 1, 31), STORE_TOO_MANY);
}

static void test_update_pending_expiry(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    fx->now += LIVE / 2;
    assert_int_equal(update_status(fx, 1, 10, 0), STORE_OK); /* older: expiry unchanged */
    fx->now += LIVE / 2 - 1;
    assert_int_equal(pending_version(fx, 1, 10), 1);
    fx->now += 1;
    assert_int_equal(pending_version(fx, 1, 10), -1);
    /* After expiry, an older version is stored: nothing is pending to compare with. */
    assert_int_equal(update_status(fx, 1, 10, 0), STORE_OK);
    assert_int_equal(pending_version(fx, 1, 10), 0);
    assert_int_equal(stats(fx).registered, 1);
}

/* ---- fetch ---- */

static void test_fetch(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(fetch_count(fx, 1), 0); /* unknown */
    assert_int_equal(stats(fx).uaids, 0);    /* and no record made */
    for (unsigned c = 10; c < 13; c++) {
        assert_int_equal(reg(fx, 1, c), STORE_OK);
        assert_int_equal(update_status(fx, 1, c, c), STORE_OK);
    }
    fx->now += 10;
    assert_int_equal(update_status(fx, 1, 12, 100), STORE_OK);
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 3);
    assert_int_equal(find_update(f, 10)->version, 10);
    assert_int_equal(find_update(f, 11)->version, 11);
    assert_int_equal(find_update(f, 12)->version, 100);
    store_req_free(f);
    /* Only the unexpired ones. */
    fx->now += LIVE - 10;
    f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].version, 100);
    store_req_free(f);
}

static void test_bad_op(void **state)
{
    struct fx *fx = *state;
    struct store_req *req = req_new((enum store_op)77, 1, 1);
    run(fx, req);
    assert_int_equal(req->status, STORE_ERROR);
    store_req_free(req);
}

/* ---- expiry and the sweep ---- */

static void test_sweep_bounded_and_shrinks(void **state)
{
    enum { N = 2000 };
    struct fx *fx = *state;
    for (unsigned u = 0; u < N; u++) {
        assert_int_equal(reg(fx, u, 1), STORE_OK);
        assert_int_equal(update_status(fx, u, 1, 1), STORE_OK);
        assert_int_equal(unreg(fx, u, 2), STORE_OK);
    }
    struct store_mem_stats s = stats(fx);
    assert_int_equal(s.uaids, N);
    assert_int_equal(s.registered, N);
    assert_int_equal(s.pending, N);
    assert_int_equal(s.deleted, N);
    assert_true(s.buckets >= N);
    size_t big = s.buckets;

    /* Channel tombstones expire first; the sweep prunes them inside live records. */
    fx->now += DEL;
    assert_int_equal(store_mem_sweep(fx->st, big), 0);
    s = stats(fx);
    assert_int_equal(s.deleted, 0);
    assert_int_equal(s.uaids, N);

    /* Everything expires: nothing is freed until visited... */
    fx->now += LIVE;
    assert_int_equal(stats(fx).uaids, N);
    /* ...and a bounded sweep visits only part of the table. */
    assert_int_equal(store_mem_sweep(fx->st, 64), 0);
    s = stats(fx);
    assert_true(s.uaids < N);
    assert_true(s.uaids > N / 2);
    /* Further sweeps go on where the last one stopped. */
    size_t left = s.uaids;
    for (size_t i = 0; i * 64 < big; i++)
        assert_int_equal(store_mem_sweep(fx->st, 64), 0);
    s = stats(fx);
    assert_true(s.uaids < left);
    assert_int_equal(store_mem_sweep(fx->st, SIZE_MAX), 0);
    s = stats(fx);
    assert_int_equal(s.uaids + s.registered + s.pending, 0);
    assert_int_equal(s.buckets, 64); /* the table shrank back */
}

static void test_sweep_prunes_pending(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_OK); /* unlisted */
    fx->now += LIVE - 1;
    assert_false(hello_reset(fx, 1, 1, 90)); /* the record lives on */
    fx->now += 1;
    assert_int_equal(stats(fx).pending, 2);
    assert_int_equal(store_mem_sweep(fx->st, SIZE_MAX), 0);
    struct store_mem_stats s = stats(fx);
    assert_int_equal(s.pending, 0);
    assert_int_equal(s.uaids, 1);
    assert_int_equal(s.registered, 1);
}

static void test_lazy_expiry(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    fx->now += LIVE;
    /* Not swept, but an access sees that it has expired. */
    assert_int_equal(stats(fx).uaids, 1);
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_int_equal(stats(fx).uaids, 0);
}

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* The backend's own timer sweeps (a real second passes). */
static void test_sweep_timer(void **state)
{
    struct fx *fx = *state;
    for (unsigned u = 0; u < 10; u++)
        assert_int_equal(reg(fx, u, 1), STORE_OK);
    fx->now += LIVE;
    uv_timer_t guard;
    uv_timer_init(&fx->loop, &guard);
    uv_timer_start(&guard, stop_loop, 1200, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(stats(fx).uaids, 0);
}

/* ---- the asynchronous interface ---- */

static void test_completion_order(void **state)
{
    struct fx *fx = *state;
    struct store_req *reqs[60];
    for (unsigned i = 0; i < 60; i++) {
        static const enum store_op ops[] = {STORE_REGISTER, STORE_UPDATE, STORE_FETCH,
                                            STORE_ACK,      STORE_HELLO,  STORE_UNREGISTER};
        reqs[i] = req_new(ops[i % 6], i % 7, i % 5);
        reqs[i]->owner = i;
        reqs[i]->done = on_done;
        fx->in_submit = true;
        store_submit(fx->st, reqs[i]);
        fx->in_submit = false;
    }
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 60);
    for (unsigned i = 0; i < 60; i++) {
        assert_int_equal(fx->order[i], i);
        store_req_free(reqs[i]);
    }
}

static void test_submit_from_callback(void **state)
{
    struct fx *fx = *state;
    fx->chain = true;
    fx->free_in_cb = true;
    struct store_req *req = req_new(STORE_FETCH, 1, 0);
    req->done = on_done;
    fx->in_submit = true;
    store_submit(fx->st, req);
    fx->in_submit = false;
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 2);
    assert_int_equal(fx->order[1], 1000);
}

static void test_close_outstanding(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    size_t before = fx->n_completed;
    struct store_req *reqs[5];
    for (unsigned i = 0; i < 5; i++) {
        /* Executed at once, with results (a pending update), but not delivered yet. */
        reqs[i] = req_new(i % 2 ? STORE_FETCH : STORE_HELLO, 1, 0);
        reqs[i]->uaid_valid = true;
        reqs[i]->owner = i;
        reqs[i]->done = on_done;
        store_submit(fx->st, reqs[i]);
    }
    store_close(fx->st);
    fx->closed = true;
    assert_int_equal(fx->n_completed, before); /* not inside store_close() */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, before + 5);
    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(fx->order[before + i], i);
        assert_int_equal(reqs[i]->status, STORE_UNAVAILABLE);
        assert_int_equal(reqs[i]->n_updates, 0);
        assert_null(reqs[i]->updates);
        assert_false(reqs[i]->reset);
        store_req_free(reqs[i]);
    }
}

/* ---- allocation failures ---- */

/* Prepares state (no failure), then runs one operation; returns its status. */
struct alloc_case {
    const char *name;
    void (*prepare)(struct fx *fx);
    struct store_req *(*op)(void);
};

static void prep_none(struct fx *fx)
{
}

static void prep_pending(struct fx *fx)
{
    for (unsigned c = 10; c < 10 + MAXCH; c++) {
        assert_int_equal(reg(fx, 1, c), STORE_OK);
        store_req_free(update(fx, 1, c, 1, "data"));
    }
}

/* Seven unlisted channels: the next one makes the channel table grow. */
static void prep_full_table(struct fx *fx)
{
    for (unsigned c = 100; c < 105; c++)
        assert_int_equal(update_status(fx, 1, c, 1), STORE_OK);
}

/* 64 uaids: the next one makes the uaid table grow (a failure there is harmless). */
static void prep_full_buckets(struct fx *fx)
{
    for (unsigned u = 1000; u < 1064; u++)
        assert_int_equal(reg(fx, u, 1), STORE_OK);
}

static struct store_req *op_hello_new(void)
{
    struct store_req *req = req_new(STORE_HELLO, 0, 0);
    make_id(req->new_uaid, 2);
    return req;
}

static struct store_req *op_hello_pending(void)
{
    struct store_req *req = req_new(STORE_HELLO, 1, 0);
    req->uaid_valid = true;
    req->n_channels = 1;
    return req;
}

static struct store_req *op_register(void)
{
    return req_new(STORE_REGISTER, 1, 50);
}

static struct store_req *op_register_other_uaid(void)
{
    return req_new(STORE_REGISTER, 2, 50);
}

static struct store_req *op_unregister(void)
{
    return req_new(STORE_UNREGISTER, 3, 50);
}

static struct store_req *op_update(void)
{
    struct store_req *req = req_new(STORE_UPDATE, 1, 200);
    req->version = 2;
    req->data = strdup("some data");
    req->data_len = 9;
    return req;
}

static struct store_req *op_update_existing(void)
{
    struct store_req *req = req_new(STORE_UPDATE, 1, 10);
    req->version = 2;
    req->data = strdup("newer data");
    req->data_len = 10;
    return req;
}

static struct store_req *op_fetch(void)
{
    return req_new(STORE_FETCH, 1, 0);
}

static struct store_req *op_ack(void)
{
    struct store_req *req = req_new(STORE_ACK, 1, 0);
    req->acks = calloc(1, sizeof(*req->acks));
    make_id(req->acks[0].chid, 100);
    req->acks[0].version = 5;
    req->n_acks = 1;
    return req;
}

static void test_alloc_failures(void **state)
{
    static const struct alloc_case cases[] = {
        {"hello new", prep_none, op_hello_new},
        {"hello pending", prep_pending, op_hello_pending},
        {"register", prep_none, op_register},
        {"register grows uaids", prep_full_buckets, op_register_other_uaid},
        {"register grows chans", prep_full_table, op_register},
        {"unregister", prep_none, op_unregister},
        {"update new", prep_none, op_update},
        {"update new grows", prep_full_table, op_update},
        {"update existing", prep_pending, op_update_existing},
        {"fetch", prep_pending, op_fetch},
        {"ack shrinks", prep_full_table, op_ack},
    };
    struct fx *fx = *state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        bool saw_error = false, saw_ok = false;
        for (long fail = 1; !saw_ok; fail++) {
            struct fx *f = NULL;
            setup((void **)&f);
            cases[k].prepare(f);
            struct store_req *req = cases[k].op();
            fail_alloc_at(fail);
            run(f, req);
            bool failed = alloc_calls >= fail;
            fail_alloc_at(0);
            if (!failed) {
                assert_int_equal(req->status, STORE_OK);
                saw_ok = true;
            } else {
                if (req->status != STORE_OK && req->status != STORE_ERROR)
                    fail_msg("%s, allocation %ld: status %d", cases[k].name, fail, req->status);
                saw_error = saw_error || req->status == STORE_ERROR;
            }
            store_req_free(req);
            /* The store still works. */
            assert_int_equal(reg(f, 4, 77), STORE_OK);
            assert_int_equal(update_status(f, 4, 77, 9), STORE_OK);
            assert_int_equal(pending_version(f, 4, 77), 9);
            void *p = f;
            teardown(&p);
            assert_true(fail < 50);
        }
        if (cases[k].op != op_ack)
            assert_true(saw_error);
    }
    cur = fx;
}

static void test_new_alloc_failures(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (long fail = 1; fail <= 2; fail++) {
        fail_alloc_at(fail);
        assert_null(store_mem_new(&loop, &limits));
    }
    fail_alloc_at(0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- a randomized comparison with a reference model ---- */

enum { MU = 8, MC = 12, M_MAX = 4, M_LIVE = 60, M_DEL = 35 };

struct mchan {
    int state; /* 0 free, 1 registered, 2 deleted, 3 unlisted */
    bool pend;
    int64_t ver;
    int data; /* 0: none */
    uint64_t exp;
};

struct mrec {
    bool exists, dropped;
    uint64_t exp;
    struct mchan ch[MC];
};

static struct mrec model[MU];

static uint64_t maxu(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static struct mrec *m_lookup(unsigned u, uint64_t now)
{
    if (model[u].exists && now >= model[u].exp)
        memset(&model[u], 0, sizeof(model[u]));
    return model[u].exists ? &model[u] : NULL;
}

static struct mrec *m_live(unsigned u, uint64_t now)
{
    struct mrec *r = m_lookup(u, now);
    if (!r) {
        r = &model[u];
        memset(r, 0, sizeof(*r));
        r->exists = true;
    }
    r->dropped = false;
    return r;
}

static struct mchan *m_chan(struct mrec *r, unsigned c, uint64_t now)
{
    struct mchan *ch = &r->ch[c];
    if (ch->pend && now >= ch->exp)
        ch->pend = false;
    if ((ch->state == 2 && now >= ch->exp) || (ch->state == 3 && !ch->pend))
        memset(ch, 0, sizeof(*ch));
    return ch->state ? ch : NULL;
}

static int m_registered(const struct mrec *r)
{
    int n = 0;
    for (int c = 0; c < MC; c++)
        n += r->ch[c].state == 1;
    return n;
}

/* Expected pending updates of r: a bitmap of channels and their versions. */
static unsigned m_pending(struct mrec *r, uint64_t now, int64_t vers[MC], int datas[MC])
{
    unsigned bits = 0;
    for (unsigned c = 0; c < MC; c++) {
        struct mchan *ch = m_chan(r, c, now);
        if (ch && ch->pend) {
            bits |= 1u << c;
            vers[c] = ch->ver;
            datas[c] = ch->data;
        }
    }
    return bits;
}

static void check_updates(const struct store_req *req, unsigned bits, const int64_t vers[MC],
                          const int datas[MC])
{
    unsigned got = 0;
    for (size_t i = 0; i < req->n_updates; i++) {
        unsigned c = id_num(req->updates[i].chid);
        assert_true(c < MC);
        assert_false(got & (1u << c));
        got |= 1u << c;
        assert_true(req->updates[i].version == vers[c]);
        if (datas[c]) {
            char buf[16];
            snprintf(buf, sizeof(buf), "d%d", datas[c]);
            assert_int_equal(req->updates[i].data_len, strlen(buf));
            assert_memory_equal(req->updates[i].data, buf, strlen(buf));
        } else {
            assert_null(req->updates[i].data);
        }
    }
    assert_int_equal(got, bits);
}

static uint64_t rng_state = 0x243f6a8885a308d3ULL;
static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static void model_step(struct fx *fx, int data_seq)
{
    uint64_t now = fx->now;
    unsigned u = rnd(MU), c = rnd(MC);
    int64_t vers[MC] = {0};
    int datas[MC] = {0};
    struct mrec *r;
    struct mchan *ch;

    switch (rnd(6)) {
    case 0: { /* hello */
        bool valid = rnd(5) != 0;
        size_t n = rnd(M_MAX + 3);
        unsigned nu = rnd(MU);
        struct store_req *req = req_new(STORE_HELLO, u, 0);
        req->uaid_valid = valid;
        req->n_channels = n;
        make_id(req->new_uaid, nu);
        run(fx, req);
        bool reset = !valid;
        if (valid) {
            struct mrec *old = m_lookup(u, now);
            bool known = old && !old->dropped;
            if (n > M_MAX) {
                if (known) {
                    memset(old->ch, 0, sizeof(old->ch));
                    old->dropped = true;
                    old->exp = now + M_DEL;
                }
                reset = true;
            } else if (!known && n > 0) {
                reset = true;
            }
        }
        r = m_live(reset ? nu : u, now);
        r->exp = maxu(r->exp, now + M_LIVE);
        assert_int_equal(req->status, STORE_OK);
        assert_int_equal(req->reset, reset);
        unsigned bits = m_pending(r, now, vers, datas);
        check_updates(req, bits, vers, datas);
        store_req_free(req);
        break;
    }
    case 1: { /* register */
        r = m_live(u, now);
        r->exp = maxu(r->exp, now + M_LIVE);
        ch = m_chan(r, c, now);
        enum store_status want = STORE_OK;
        if (!(ch && ch->state == 1)) {
            if (m_registered(r) >= M_MAX)
                want = STORE_TOO_MANY;
            else
                r->ch[c].state = 1;
        }
        assert_int_equal(reg(fx, u, c), want);
        break;
    }
    case 2: { /* unregister */
        r = m_lookup(u, now);
        if (!r || !r->dropped) {
            r = m_live(u, now);
            r->exp = maxu(r->exp, now + M_LIVE);
            m_chan(r, c, now);
            r->ch[c].state = 2;
            r->ch[c].pend = false;
            r->ch[c].exp = now + M_DEL;
            r->exp = maxu(r->exp, r->ch[c].exp);
        }
        assert_int_equal(unreg(fx, u, c), STORE_OK);
        break;
    }
    case 3: { /* ack */
        int64_t v = rnd(8);
        r = m_lookup(u, now);
        if (r && !r->dropped) {
            r->exp = maxu(r->exp, now + M_LIVE);
            ch = m_chan(r, c, now);
            if (ch && ch->pend && ch->ver <= v) {
                ch->pend = false;
                m_chan(r, c, now);
            }
        }
        ack(fx, u, c, v);
        break;
    }
    case 4: { /* update */
        int64_t v = rnd(8);
        int data = rnd(2) ? data_seq : 0;
        char buf[16];
        snprintf(buf, sizeof(buf), "d%d", data);
        struct store_req *req = update(fx, u, c, v, data ? buf : NULL);
        r = m_lookup(u, now);
        ch = r ? m_chan(r, c, now) : NULL;
        if ((r && r->dropped) || (ch && ch->state == 2)) {
            assert_int_equal(req->status, STORE_GONE);
            assert_int_equal(req->n_updates, 0);
        } else {
            if (!r)
                r = m_live(u, now);
            ch = &r->ch[c];
            if (!ch->state)
                ch->state = 3;
            if (!ch->pend || v >= ch->ver) {
                ch->pend = true;
                ch->ver = v;
                ch->data = data;
                ch->exp = now + M_LIVE;
            }
            r->exp = maxu(r->exp, now + M_LIVE);
            assert_int_equal(req->status, STORE_OK);
            vers[c] = ch->ver;
            datas[c] = ch->data;
            check_updates(req, 1u << c, vers, datas);
        }
        store_req_free(req);
        break;
    }
    default: { /* fetch */
        struct store_req *req = fetch(fx, u);
        unsigned bits = 0;
        r = m_lookup(u, now);
        if (r && !r->dropped) {
            r->exp = maxu(r->exp, now + M_LIVE);
            bits = m_pending(r, now, vers, datas);
        }
        check_updates(req, bits, vers, datas);
        store_req_free(req);
        break;
    }
    }
}

static void test_against_model(void **state)
{
    struct fx *fx = *state;
    const struct store_limits l = {M_MAX, M_LIVE, M_DEL};
    store_set_limits(fx->st, &l);
    memset(model, 0, sizeof(model));
    for (int i = 1; i <= 20000; i++) {
        fx->now += rnd(4);
        model_step(fx, i);
        if (rnd(50) == 0)
            assert_int_equal(store_mem_sweep(fx->st, 1 + rnd(70)), 0);
    }
    /* The counts agree with the model, too. */
    struct store_mem_stats s = stats(fx);
    size_t live = 0, dropped = 0, registered = 0;
    for (unsigned u = 0; u < MU; u++) {
        struct mrec *r = m_lookup(u, fx->now);
        if (!r)
            continue;
        live += !r->dropped;
        dropped += r->dropped;
        registered += (size_t)m_registered(r);
    }
    assert_int_equal(store_mem_sweep(fx->st, SIZE_MAX), 0);
    s = stats(fx);
    assert_int_equal(s.uaids, live);
    assert_int_equal(s.dropped, dropped);
    assert_int_equal(s.registered, registered);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_name),
        T(test_hello_invalid_uaid_resets),
        T(test_hello_unknown),
        T(test_hello_too_many_channels),
        T(test_hello_dropped_uaid_is_unknown),
        T(test_hello_returns_pending),
        T(test_hello_lifetime),
        T(test_activity_refreshes_lifetime),
        T(test_register),
        T(test_register_latest_spelling),
        T(test_register_without_hello_and_on_dropped),
        T(test_unregister),
        T(test_unregister_unlisted),
        T(test_tombstone_outlives_live),
        T(test_ack),
        T(test_ack_many),
        T(test_ack_unlisted_removes_channel),
        T(test_update_versions),
        T(test_update_empty_data_is_none),
        T(test_update_big_data),
        T(test_update_unknown),
        T(test_update_pending_expiry),
        T(test_fetch),
        T(test_bad_op),
        T(test_sweep_bounded_and_shrinks),
        T(test_sweep_prunes_pending),
        T(test_lazy_expiry),
        T(test_sweep_timer),
        T(test_completion_order),
        T(test_submit_from_callback),
        T(test_close_outstanding),
        T(test_alloc_failures),
        cmocka_unit_test(test_new_alloc_failures),
        T(test_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
