/*
 * Unit tests of the memcached store (store_mc.c behind store.c), against a real memcached
 * that the test starts itself on a free loopback port (/usr/bin/memcached, or $SP_MEMCACHED;
 * a missing binary fails the test: CI installs the package) and kills at the end.
 *
 * Covered: the store.h contract, as scenarios that run on both backends (memory and
 * memcached) and as a randomized comparison of the two under one fake clock; the schema
 * (keys, values, TTLs, data items deleted when no longer named); values that fail validation;
 * CAS conflicts made deterministic by a hook (a concurrent ack, register, unregister, replace
 * from a second node, endless conflicts); several nodes editing one uaid at once; record size
 * limits; the server list; the circuit breaker alone and against a hung (SIGSTOP), killed and
 * restarted memcached, with one server of two down; allocation failures; closing.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

/*
 * The backend's .c files are included (h2o style) so that its allocations can be made to fail (the
 * fail_at-th malloc/calloc/realloc from arming on returns NULL) and its internals tested.
 * libmemcached's own allocations are not affected.
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

static void *fake_realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n);
}

static void fail_alloc_at(long n)
{
    alloc_calls = 0;
    alloc_fail_at = n;
}

#include "../../src/store_backend.h"
#define malloc  fake_malloc
#define calloc  fake_calloc
#define realloc fake_realloc
#include "../../src/store_mc_rec.c"
#include "../../src/store_mc_pool.c"
#include "../../src/store_mc.c"
#undef malloc
#undef calloc
#undef realloc

/* ---- the memcached processes ---- */

struct mcd {
    pid_t pid;
    int port;
};

static struct mcd mcd1, mcd2;
static memcached_st *raw; /* the test's own connection to mcd1 */
static char servers1[64];

static const char *mcd_path(void)
{
    const char *p = getenv("SP_MEMCACHED");
    return p && *p ? p : "/usr/bin/memcached";
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool port_accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts memcached on d->port and waits until it accepts connections. */
static bool mcd_spawn(struct mcd *d)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", d->port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test, whatever happens */
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDOUT_FILENO);
        const char *path = mcd_path();
        if (geteuid() == 0)
            execl(path, "memcached", "-p", port, "-U", "0", "-l", "127.0.0.1", "-t", "2", "-m",
                  "64", "-u", "root", (char *)NULL);
        else
            execl(path, "memcached", "-p", port, "-U", "0", "-l", "127.0.0.1", "-t", "2", "-m",
                  "64", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return false;
    d->pid = pid;
    for (int i = 0; i < 500; i++) {
        if (port_accepts(d->port))
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            d->pid = 0;
            return false;
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    d->pid = 0;
    return false;
}

/* Starts memcached on a free port (another one if that port was taken meanwhile). */
static bool mcd_start(struct mcd *d)
{
    for (int i = 0; i < 5; i++) {
        d->port = free_port();
        if (d->port > 0 && mcd_spawn(d))
            return true;
    }
    return false;
}

static void mcd_kill(struct mcd *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGCONT);
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

/* Stops (SIGSTOP) memcached and waits until the kernel says it is stopped. */
static void mcd_stop(struct mcd *d)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
    assert_int_equal(kill(d->pid, SIGSTOP), 0);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'T')
            return;
        usleep(5000);
    }
    fail_msg("memcached did not stop");
}

static void mcd_kill_all(void)
{
    mcd_kill(&mcd1);
    mcd_kill(&mcd2);
}

static memcached_st *raw_connect(int port)
{
    memcached_st *mc = memcached_create(NULL);
    assert_non_null(mc);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 1000);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    assert_int_equal(memcached_server_add(mc, "127.0.0.1", (in_port_t)port), MEMCACHED_SUCCESS);
    return mc;
}

/* Flushes mcd1, restarting it if a test left it dead, and waiting until it answers. */
static void mcd_ready(void)
{
    if (mcd1.pid <= 0)
        assert_true(mcd_spawn(&mcd1));
    for (int i = 0; i < 300; i++) {
        if (memcached_flush(raw, 0) == MEMCACHED_SUCCESS)
            return;
        usleep(20000);
    }
    fail_msg("memcached does not answer");
}

static int group_setup(void **state)
{
    if (access(mcd_path(), X_OK) != 0) {
        print_error("memcached not found at %s: these tests need a real memcached; install the "
                    "memcached package (CI does, from .ci/packages)\n",
                    mcd_path());
        return -1;
    }
    if (!mcd_start(&mcd1)) {
        print_error("cannot start %s on a free port\n", mcd_path());
        return -1;
    }
    atexit(mcd_kill_all);
    snprintf(servers1, sizeof(servers1), "127.0.0.1:%d", mcd1.port);
    raw = raw_connect(mcd1.port);
    return 0;
}

static int group_teardown(void **state)
{
    memcached_free(raw);
    raw = NULL;
    mcd_kill_all();
    return 0;
}

/* ---- fixture ---- */

#define MAXCH 3
#define LIVE  10000
#define DEL   5000

static const struct store_limits limits = {
    .max_channels = MAXCH,
    .timeout_live_ms = LIVE,
    .timeout_del_ms = DEL,
};

static const struct store_mc_options test_opts = {
    .workers = 2,
    .connect_timeout_ms = 200,
    .poll_timeout_ms = 200,
    .retry_timeout_s = 1,
    .breaker_failures = 3,
    .breaker_open_ms = 300,
};

enum kind { K_MEM, K_MC };

struct fx {
    enum kind kind;
    uv_loop_t loop;
    struct store *st;
    _Atomic uint64_t now;
    bool closed;
    bool in_submit;
    size_t n_completed;
    uint64_t order[1024]; /* owners in completion order */
    struct store_req *last;
};

static struct fx *cur;
static uv_thread_t loop_thread;
static uint8_t id_salt[8]; /* fresh per test, so that no two tests share a key */

static uint64_t fake_now(void *arg)
{
    return atomic_load(&((struct fx *)arg)->now);
}

static void advance(struct fx *fx, uint64_t ms)
{
    atomic_fetch_add(&fx->now, ms);
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
}

static struct store *new_mc(uv_loop_t *loop, const char *servers, const struct store_limits *l,
                            const struct store_mc_options *opt)
{
    char err[256] = "";
    struct store *st = store_mc_new(loop, servers, l, opt, err, sizeof(err));
    if (!st)
        fail_msg("store_mc_new: %s", err);
    return st;
}

static int fx_setup(void **state, enum kind kind)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->kind = kind;
    atomic_store(&fx->now, 1700000000000ULL);
    uint8_t fresh[IDS_BYTES];
    ids_generate(fresh);
    memcpy(id_salt, fresh, sizeof(id_salt));
    if (kind == K_MC) {
        mcd_ready();
        fx->st = new_mc(&fx->loop, servers1, &limits, &test_opts);
        assert_int_equal(store_mc_set_clock(fx->st, fake_now, fx), 0);
    } else {
        fx->st = store_mem_new(&fx->loop, &limits);
        assert_non_null(fx->st);
        assert_int_equal(store_mem_set_clock(fx->st, fake_now, fx), 0);
    }
    loop_thread = uv_thread_self();
    cur = fx;
    *state = fx;
    return 0;
}

static int setup_mem(void **state)
{
    return fx_setup(state, K_MEM);
}

static int setup_mc(void **state)
{
    return fx_setup(state, K_MC);
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

static struct mc *mc_backend(struct fx *fx)
{
    struct mc *m = mc_of(fx->st);
    assert_non_null(m);
    return m;
}

static struct store_mc_stats mc_stats(struct store *st)
{
    struct store_mc_stats s;
    assert_int_equal(store_mc_stats(st, &s), 0);
    return s;
}

static void make_id(uint8_t out[IDS_BYTES], unsigned n)
{
    memset(out, 0, IDS_BYTES);
    out[0] = (uint8_t)n;
    out[1] = (uint8_t)(n >> 8);
    out[2] = (uint8_t)(n >> 16);
    memcpy(out + 4, id_salt, sizeof(id_salt));
    out[15] = 0xee;
}

static unsigned id_num(const uint8_t id[IDS_BYTES])
{
    return id[0] | (unsigned)id[1] << 8 | (unsigned)id[2] << 16;
}

/* Submits req to st, checks that it does not complete inside store_submit(), runs the loop. */
static struct store_req *run_on(struct fx *fx, struct store *st, struct store_req *req)
{
    size_t before = fx->n_completed;
    req->done = on_done;
    fx->in_submit = true;
    store_submit(st, req);
    fx->in_submit = false;
    assert_int_equal(fx->n_completed, before);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, before + 1);
    assert_ptr_equal(fx->last, req);
    return req;
}

static struct store_req *run(struct fx *fx, struct store_req *req)
{
    return run_on(fx, fx->st, req);
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

static bool hello_reset(struct fx *fx, int uaid, size_t n_channels, unsigned new_uaid)
{
    struct store_req *req = hello(fx, uaid, n_channels, new_uaid);
    bool reset = req->reset;
    store_req_free(req);
    return reset;
}

static enum store_status simple_on(struct fx *fx, struct store *st, enum store_op op, unsigned uaid,
                                   unsigned chid)
{
    struct store_req *req = run_on(fx, st, req_new(op, uaid, chid));
    enum store_status status = req->status;
    if (op != STORE_FETCH)
        assert_int_equal(req->n_updates, 0);
    store_req_free(req);
    return status;
}

static enum store_status reg(struct fx *fx, unsigned uaid, unsigned chid)
{
    return simple_on(fx, fx->st, STORE_REGISTER, uaid, chid);
}

static enum store_status unreg(struct fx *fx, unsigned uaid, unsigned chid)
{
    return simple_on(fx, fx->st, STORE_UNREGISTER, uaid, chid);
}

static struct store_req *update_req(unsigned uaid, unsigned chid, int64_t version, const char *data)
{
    struct store_req *req = req_new(STORE_UPDATE, uaid, chid);
    req->version = version;
    if (data) {
        req->data = strdup(data);
        req->data_len = strlen(data);
    }
    return req;
}

static struct store_req *update(struct fx *fx, unsigned uaid, unsigned chid, int64_t version,
                                const char *data)
{
    return run(fx, update_req(uaid, chid, version, data));
}

static enum store_status update_status(struct fx *fx, unsigned uaid, unsigned chid, int64_t version)
{
    struct store_req *req = update(fx, uaid, chid, version, NULL);
    enum store_status status = req->status;
    assert_int_equal(req->n_updates, status == STORE_OK ? 1 : 0);
    store_req_free(req);
    return status;
}

static struct store_req *ack_req(unsigned uaid, unsigned chid, int64_t version)
{
    struct store_req *req = req_new(STORE_ACK, uaid, 0);
    req->acks = calloc(1, sizeof(*req->acks));
    make_id(req->acks[0].chid, chid);
    req->acks[0].version = version;
    req->n_acks = 1;
    return req;
}

static void ack(struct fx *fx, unsigned uaid, unsigned chid, int64_t version)
{
    struct store_req *req = run(fx, ack_req(uaid, chid, version));
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

/* ---- raw access to what the backend wrote ---- */

static char *raw_get(memcached_st *mc, const char *key, size_t *len)
{
    uint32_t flags;
    memcached_return_t rc;
    char *v = memcached_get(mc, key, strlen(key), len, &flags, &rc);
    assert_true(v || rc == MEMCACHED_NOTFOUND);
    return v;
}

static void raw_set(memcached_st *mc, const char *key, const void *v, size_t len)
{
    assert_int_equal(memcached_set(mc, key, strlen(key), v, len, 60, 0), MEMCACHED_SUCCESS);
}

static void rec_key(char key[MC_KEY_MAX], unsigned uaid)
{
    uint8_t id[IDS_BYTES];
    make_id(id, uaid);
    mc_rec_key(key, id);
}

static void data_key(char key[MC_KEY_MAX], unsigned uaid, unsigned chid, uint64_t nonce)
{
    uint8_t u[IDS_BYTES], c[IDS_BYTES];
    make_id(u, uaid);
    make_id(c, chid);
    mc_rec_data_key(key, u, c, nonce);
}

/* Decodes uaid's record as memcached holds it (pruned at now); false when there is none. */
static bool raw_rec(memcached_st *mc, unsigned uaid, uint64_t now, struct mc_rec *rec)
{
    char key[MC_KEY_MAX];
    size_t len;
    rec_key(key, uaid);
    memset(rec, 0, sizeof(*rec));
    char *v = raw_get(mc, key, &len);
    if (!v)
        return false;
    assert_int_equal(mc_rec_decode(rec, (const uint8_t *)v, len), 0);
    free(v);
    if (now >= rec->expires)
        rec->n = 0;
    mc_rec_prune(rec, now);
    return true;
}

static const struct mc_chan *rec_chan(struct mc_rec *rec, unsigned chid)
{
    uint8_t c[IDS_BYTES];
    make_id(c, chid);
    return mc_rec_find(rec, c);
}

/* ---- the contract, on both backends ---- */

static void test_hello_invalid_uaid_resets(void **state)
{
    struct fx *fx = *state;
    assert_true(hello_reset(fx, -1, 0, 50));
    assert_true(hello_reset(fx, -1, 5, 51));
    /* The new uaid is known now: a hello naming it with channels keeps it. */
    assert_false(hello_reset(fx, 50, 2, 99));
    assert_false(hello_reset(fx, 51, MAXCH, 99));
}

static void test_hello_unknown(void **state)
{
    struct fx *fx = *state;
    /* Unknown with channels: reset. Unknown without channels: kept, and known from then on. */
    assert_true(hello_reset(fx, 1, 1, 60));
    assert_false(hello_reset(fx, 2, 0, 61));
    assert_false(hello_reset(fx, 2, 2, 62));
    assert_true(hello_reset(fx, 1, 1, 63)); /* 1 was never stored */
    assert_false(hello_reset(fx, 60, 1, 64));
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

    /* The old uaid's endpoints answer GONE within timeout_del, also for unknown channels. */
    assert_int_equal(update_status(fx, 1, 10, 2), STORE_GONE);
    assert_int_equal(update_status(fx, 1, 11, 2), STORE_GONE);
    assert_int_equal(fetch_count(fx, 1), 0);
    ack(fx, 1, 10, 100);                          /* no effect, no error */
    assert_int_equal(unreg(fx, 1, 10), STORE_OK); /* idem */
    advance(fx, DEL - 1);
    assert_int_equal(update_status(fx, 1, 10, 3), STORE_GONE);
    advance(fx, 1);
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
    assert_int_equal(u->data[10], '\0');
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
    advance(fx, LIVE - 1);
    assert_false(hello_reset(fx, 1, 2, 91)); /* still known; refreshed */
    advance(fx, LIVE - 1);
    assert_false(hello_reset(fx, 1, 2, 92));
    advance(fx, LIVE);
    assert_true(hello_reset(fx, 1, 2, 93)); /* expired: unknown */
}

static void test_activity_refreshes_lifetime(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    /* Every operation on a live uaid extends its life by timeout_live. */
    advance(fx, LIVE - 1);
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    advance(fx, LIVE - 1);
    ack(fx, 1, 10, 1);
    advance(fx, LIVE - 1);
    assert_int_equal(fetch_count(fx, 1), 0);
    advance(fx, LIVE - 1);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
    advance(fx, LIVE - 1);
    assert_false(hello_reset(fx, 1, 1, 91));
    assert_int_equal(pending_version(fx, 1, 10), 1);
    advance(fx, 1);
    assert_int_equal(pending_version(fx, 1, 10), -1); /* the update expired; the uaid lives */
    assert_false(hello_reset(fx, 1, 1, 92));
}

static void test_register(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    for (unsigned c = 10; c < 10 + MAXCH; c++)
        assert_int_equal(reg(fx, 1, c), STORE_OK);
    assert_int_equal(reg(fx, 1, 10), STORE_OK); /* idempotent, also at the limit */
    assert_int_equal(reg(fx, 1, 99), STORE_TOO_MANY);
    /* Unregistering makes room. */
    assert_int_equal(unreg(fx, 1, 11), STORE_OK);
    assert_int_equal(reg(fx, 1, 99), STORE_OK);
    assert_int_equal(reg(fx, 1, 11), STORE_TOO_MANY); /* deleted, and no room */
    assert_int_equal(unreg(fx, 1, 99), STORE_OK);
    /* Registering a deleted channel makes it registered again: updates are accepted. */
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_GONE);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_OK);
    assert_int_equal(reg(fx, 1, 98), STORE_TOO_MANY);
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
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK); /* not a tombstone any more */
}

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

    /* The tombstone lasts timeout_del; then the channel is unknown and accepts updates. */
    advance(fx, DEL - 1);
    assert_int_equal(update_status(fx, 1, 10, 7), STORE_GONE);
    advance(fx, 1);
    assert_int_equal(update_status(fx, 1, 10, 7), STORE_OK);
    assert_int_equal(pending_version(fx, 1, 10), 7);
}

static void test_unregister_unlisted(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK); /* unlisted channel */
    assert_int_equal(unreg(fx, 1, 10), STORE_OK);
    assert_int_equal(update_status(fx, 1, 10, 2), STORE_GONE);
    for (unsigned c = 20; c < 20 + MAXCH; c++) /* it never counted */
        assert_int_equal(reg(fx, 1, c), STORE_OK);
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
    advance(fx, 4999);
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_GONE);
    advance(fx, 1);
    assert_true(hello_reset(fx, 1, 1, 91)); /* the record expired with its tombstone */
    assert_int_equal(update_status(fx, 1, 10, 1), STORE_OK);
}

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
    /* Unknown channel, unknown uaid, empty list: no effect, no error. */
    ack(fx, 1, 55, 1);
    ack(fx, 2, 10, 1);
    struct store_req *req = req_new(STORE_ACK, 1, 0);
    store_req_free(run(fx, req));
    /* Acks make no records: uaid 2 is still unknown. */
    assert_true(hello_reset(fx, 2, 1, 90));
    /* The channel stays registered after an ack. */
    assert_int_equal(update_status(fx, 1, 10, 8), STORE_OK);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    assert_int_equal(reg(fx, 1, 12), STORE_OK);
    assert_int_equal(reg(fx, 1, 13), STORE_TOO_MANY);
}

static void test_ack_many(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = 100, .timeout_live_ms = LIVE, .timeout_del_ms = DEL};
    store_set_limits(fx->st, &l);
    for (unsigned c = 0; c < 20; c++) {
        assert_int_equal(reg(fx, 1, c), STORE_OK);
        store_req_free(update(fx, 1, c, 10, c % 3 ? "some data" : NULL));
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
    for (size_t i = 0; i < f->n_updates; i++) {
        unsigned c = id_num(f->updates[i].chid);
        assert_int_equal(c % 2, 0);
        if (c % 3)
            assert_string_equal(f->updates[i].data, "some data");
        else
            assert_null(f->updates[i].data);
    }
    store_req_free(f);
}

static void test_ack_unlisted_removes_channel(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(update_status(fx, 1, 10, 3), STORE_OK);
    assert_int_equal(fetch_count(fx, 1), 1);
    ack(fx, 1, 10, 3);
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_int_equal(update_status(fx, 1, 10, 2), STORE_OK); /* nothing newer pending */
    assert_int_equal(pending_version(fx, 1, 10), 2);
}

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
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_null(f->updates[0].data);
    store_req_free(f);
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
    assert_int_equal(req->status, STORE_OK);
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
    advance(fx, LIVE / 2);
    assert_int_equal(update_status(fx, 1, 10, 0), STORE_OK); /* older: expiry unchanged */
    advance(fx, LIVE / 2 - 1);
    assert_int_equal(pending_version(fx, 1, 10), 1);
    advance(fx, 1);
    assert_int_equal(pending_version(fx, 1, 10), -1);
    /* After expiry, an older version is stored: nothing is pending to compare with. */
    assert_int_equal(update_status(fx, 1, 10, 0), STORE_OK);
    assert_int_equal(pending_version(fx, 1, 10), 0);
}

static void test_fetch(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_true(hello_reset(fx, 1, 1, 90)); /* and no record made */
    for (unsigned c = 10; c < 13; c++) {
        assert_int_equal(reg(fx, 1, c), STORE_OK);
        assert_int_equal(update_status(fx, 1, c, c), STORE_OK);
    }
    advance(fx, 10);
    assert_int_equal(update_status(fx, 1, 12, 100), STORE_OK);
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 3);
    assert_int_equal(find_update(f, 10)->version, 10);
    assert_int_equal(find_update(f, 11)->version, 11);
    assert_int_equal(find_update(f, 12)->version, 100);
    store_req_free(f);
    /* Only the unexpired ones. */
    advance(fx, LIVE - 10);
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

/* ---- host records (routing between nodes) ---- */

/* Runs a host op (or a hello / update) as node n with generation gen; returns the request. */
static struct store_req *host_req(struct fx *fx, enum store_op op, unsigned uaid, const char *node,
                                  uint64_t gen)
{
    struct store_req *req = req_new(op, uaid, 1);
    if (op == STORE_HELLO) {
        req->uaid_valid = true;
        make_id(req->new_uaid, uaid + 1000);
    }
    if (op == STORE_UPDATE) {
        req->version = 1;
        req->want_host = true;
    }
    if (node)
        snprintf(req->node, sizeof(req->node), "%s", node);
    req->gen = gen;
    return run(fx, req);
}

/* The host record as an update (want_host) reads it: "node/gen", or "" for none. */
static void assert_host(struct fx *fx, unsigned uaid, const char *expect)
{
    struct store_req *req = host_req(fx, STORE_UPDATE, uaid, NULL, 0);
    char got[STORE_NODE_MAX + 32] = "";
    assert_int_equal(req->status, STORE_OK);
    if (req->host[0])
        snprintf(got, sizeof(got), "%s/%llu", req->host, (unsigned long long)req->host_gen);
    assert_string_equal(got, fx->kind == K_MC ? expect : "");
    store_req_free(req);
}

static void test_host_records(void **state)
{
    struct fx *fx = *state;
    bool mc = fx->kind == K_MC;
    struct store_req *req;

    /* The first hello finds no record; the next one, elsewhere, finds the first. */
    req = host_req(fx, STORE_HELLO, 1, "10.0.0.1:81", 11);
    assert_int_equal(req->status, STORE_OK);
    assert_false(req->reset);
    assert_string_equal(req->host, "");
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.1:81/11");
    req = host_req(fx, STORE_HELLO, 1, "10.0.0.2:82", 22);
    assert_string_equal(req->host, mc ? "10.0.0.1:81" : "");
    assert_int_equal(req->host_gen, mc ? 11 : 0);
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.2:82/22");

    /* A hello of the same connection again does not report itself. */
    req = host_req(fx, STORE_HELLO, 1, "10.0.0.2:82", 22);
    assert_string_equal(req->host, "");
    store_req_free(req);

    /* Refresh: the older connection learns it is not the uaid's any more. */
    req = host_req(fx, STORE_HOST_REFRESH, 1, "10.0.0.1:81", 11);
    assert_int_equal(req->status, mc ? STORE_GONE : STORE_OK);
    store_req_free(req);
    req = host_req(fx, STORE_HOST_REFRESH, 1, "10.0.0.2:82", 22);
    assert_int_equal(req->status, STORE_OK);
    store_req_free(req);

    /* Clear: only the record's own connection removes it. */
    req = host_req(fx, STORE_HOST_CLEAR, 1, "10.0.0.1:81", 11);
    assert_int_equal(req->status, STORE_OK);
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.2:82/22");
    req = host_req(fx, STORE_HOST_CLEAR, 1, "10.0.0.2:82", 23);
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.2:82/22");
    req = host_req(fx, STORE_HOST_CLEAR, 1, "10.0.0.2:82", 22);
    assert_int_equal(req->status, STORE_OK);
    store_req_free(req);
    assert_host(fx, 1, "");

    /* A refresh over nothing writes the record again. */
    req = host_req(fx, STORE_HOST_REFRESH, 1, "10.0.0.2:82", 22);
    assert_int_equal(req->status, STORE_OK);
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.2:82/22");

    /* Without a node, hello leaves the record alone; without want_host, update reads none. */
    req = host_req(fx, STORE_HELLO, 1, NULL, 0);
    assert_string_equal(req->host, "");
    store_req_free(req);
    assert_host(fx, 1, "10.0.0.2:82/22");
    req = req_new(STORE_UPDATE, 1, 1);
    req->version = 2;
    run(fx, req);
    assert_string_equal(req->host, "");
    store_req_free(req);

    /* A hello that resets the uaid names this node under the new uaid. */
    req = req_new(STORE_HELLO, 5, 0);
    req->uaid_valid = true;
    req->n_channels = 1; /* unknown uaid with channels: reset */
    make_id(req->new_uaid, 6);
    snprintf(req->node, sizeof(req->node), "10.0.0.3:83");
    req->gen = 33;
    run(fx, req);
    assert_true(req->reset);
    store_req_free(req);
    assert_host(fx, 6, "10.0.0.3:83/33");
    assert_host(fx, 5, "");
}

static void host_key(char key[MC_KEY_MAX], unsigned uaid)
{
    uint8_t id[IDS_BYTES];
    make_id(id, uaid);
    mc_rec_host_key(key, id);
}

static void test_host_schema(void **state)
{
    struct fx *fx = *state;
    char key[MC_KEY_MAX], node[STORE_NODE_MAX + 1];
    uint8_t v[MC_HOSTREC_MAX];
    uint64_t gen;
    size_t len;

    /* Encoding: magic, generation little-endian, node; invalid nodes refused. */
    assert_int_equal(mc_rec_host_encode(v, "[::1]:8081", 0x0102030405060708ULL), 22);
    assert_memory_equal(v, "SPH1\x08\x07\x06\x05\x04\x03\x02\x01[::1]:8081", 22);
    assert_int_equal(mc_rec_host_decode(v, 22, node, &gen), 0);
    assert_string_equal(node, "[::1]:8081");
    assert_int_equal(gen, 0x0102030405060708ULL);
    assert_int_equal(mc_rec_host_encode(v, "", 1), 0);
    assert_int_equal(mc_rec_host_encode(v, "a b", 1), 0);
    assert_int_equal(mc_rec_host_encode(v, "a\n", 1), 0);
    char longest[STORE_NODE_MAX + 2];
    memset(longest, 'n', sizeof(longest));
    longest[STORE_NODE_MAX] = '\0';
    assert_int_equal(mc_rec_host_encode(v, longest, 1), MC_HOSTREC_MAX);
    longest[STORE_NODE_MAX] = 'n';
    longest[STORE_NODE_MAX + 1] = '\0';
    assert_int_equal(mc_rec_host_encode(v, longest, 1), 0);
    static const struct {
        const char *v;
        size_t len;
    } bad[] = {
        {"", 0},
        {"SPH1\0\0\0\0\0\0\0\0", 12},
        {"SPH2\1\0\0\0\0\0\0\0n:1", 15},
        {"SPH1\1\0\0\0\0\0\0\0n 1", 15},
        {"SPH1\1\0\0\0\0\0\0\0n\0001", 15},
        {"SPH", 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(mc_rec_host_decode((const uint8_t *)bad[i].v, bad[i].len, node, &gen), -1);

    /* What hello writes is there under sp1:h:<uaid>, with the record's TTL. */
    struct store_req *req = host_req(fx, STORE_HELLO, 7, "127.0.0.1:9", 99);
    store_req_free(req);
    host_key(key, 7);
    assert_memory_equal(key, "sp1:h:", 6);
    char *raw_v = raw_get(raw, key, &len);
    assert_non_null(raw_v);
    assert_int_equal(mc_rec_host_decode((const uint8_t *)raw_v, len, node, &gen), 0);
    assert_string_equal(node, "127.0.0.1:9");
    assert_int_equal(gen, 99);
    free(raw_v);

    /* A corrupt record counts as none (and is counted); the next hello replaces it. */
    uint64_t corrupt = mc_stats(fx->st).corrupt;
    raw_set(raw, key, "garbage", 7);
    assert_host(fx, 7, "");
    assert_int_equal(mc_stats(fx->st).corrupt, corrupt + 1);
    req = host_req(fx, STORE_HELLO, 7, "127.0.0.1:9", 100);
    assert_string_equal(req->host, "");
    store_req_free(req);
    assert_host(fx, 7, "127.0.0.1:9/100");
}

/* ---- the memcached backend alone ---- */

static void test_name_and_hooks(void **state)
{
    struct fx *fx = *state;
    assert_string_equal(store_name(fx->st), "memcached");
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_CLOSED);
    assert_int_equal(store_mc_retry_after(fx->st), 1);
    /* The memcached functions refuse other stores, and the other way round. */
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct store *mem = store_mem_new(&loop, &limits);
    struct store_mc_stats s;
    assert_int_equal(store_mc_breaker_state(mem), -1);
    assert_int_equal(store_mc_retry_after(mem), 0);
    assert_int_equal(store_mc_stats(mem, &s), -1);
    assert_int_equal(store_mc_set_clock(mem, NULL, NULL), -1);
    assert_int_equal(store_mc_set_hook(mem, NULL, NULL), -1);
    assert_int_equal(store_mc_breaker_state(NULL), -1);
    assert_int_equal(store_mem_sweep(fx->st, 1), -1);
    store_close(mem);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_server_lists(void **state)
{
    static const struct {
        const char *list;
        const char *error; /* NULL: accepted */
        unsigned n;
    } cases[] = {
        {"127.0.0.1:11211", NULL, 1},
        {"localhost", NULL, 1},
        {"a.example:1,b.example:65535", NULL, 2},
        {" a:1 , b:2 ", NULL, 2},
        {"[::1]:11211", NULL, 1},
        {"[::1]", NULL, 1},
        {"[fe80::1%lo]:5", NULL, 1},
        {"mc_1.internal-net:11211", NULL, 1},
        {"", "no memcached server given", 0},
        {NULL, "no memcached server given", 0},
        {",", "empty entry", 0},
        {"a:1,", "empty entry", 0},
        {"a:1,,b:2", "empty entry", 0},
        {" ", "empty entry", 0},
        {"a:", "port must be 1-65535", 0},
        {"a:0", "port must be 1-65535", 0},
        {"a:65536", "port must be 1-65535", 0},
        {"a:-1", "port must be 1-65535", 0},
        {"a:1x", "port must be 1-65535", 0},
        {"a:123456789", "port must be 1-65535", 0},
        {":11211", "no host", 0},
        {"::1", "in brackets", 0},
        {"::1:11211", "in brackets", 0},
        {"[::1", "missing ']'", 0},
        {"[::1]x", "expected ':'", 0},
        {"[]:1", "no host", 0},
        {"a b:1", "bad character", 0},
        {"a/b:1", "bad character", 0},
        {"[a-b]:1", "bad character", 0},
        {"a:1,a:1", "listed twice", 0},
    };
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        struct store *st = store_mc_new(&loop, cases[i].list, &limits, NULL, err, sizeof(err));
        if (cases[i].error) {
            if (st || !strstr(err, cases[i].error))
                fail_msg("\"%s\": expected \"%s\", got \"%s\"", cases[i].list, cases[i].error, err);
        } else {
            if (!st)
                fail_msg("\"%s\": %s", cases[i].list, err);
            assert_int_equal(mc_of(st)->pool.n_servers, cases[i].n);
            assert_int_equal(mc_of(st)->pool.n_conns, MC_DEFAULT_WORKERS);
            store_close(st);
        }
    }
    /* A long host, and the other bad arguments. */
    char list[400], err[256];
    memset(list, 'h', sizeof(list));
    list[sizeof(list) - 1] = '\0';
    assert_null(store_mc_new(&loop, list, &limits, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "too long a host"));
    assert_null(store_mc_new(NULL, "a:1", &limits, NULL, err, sizeof(err)));
    assert_null(store_mc_new(&loop, "a:1", NULL, NULL, NULL, 0));
    struct store_limits big = limits;
    big.max_channels = MC_MAX_CHANNELS + 1;
    assert_null(store_mc_new(&loop, "a:1", &big, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "storage.max_channels"));
    big.max_channels = MC_MAX_CHANNELS;
    struct store *st = store_mc_new(&loop, "a:1", &big, NULL, err, sizeof(err));
    assert_non_null(st);
    store_close(st);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_options(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct store_mc_options o = {.workers = 3, .breaker_failures = 7, .breaker_open_ms = 1234};
    struct store *st = store_mc_new(&loop, "a:1", &limits, &o, NULL, 0);
    struct mc *m = mc_of(st);
    assert_int_equal(m->pool.n_conns, 3);
    assert_int_equal(m->pool.failures, 7);
    assert_int_equal(m->pool.open_ms, 1234);
    assert_int_equal(memcached_behavior_get(m->pool.conns[2], MEMCACHED_BEHAVIOR_POLL_TIMEOUT),
                     MC_DEFAULT_POLL_MS);
    assert_int_equal(memcached_behavior_get(m->pool.conns[2], MEMCACHED_BEHAVIOR_BINARY_PROTOCOL),
                     1);
    assert_int_equal(memcached_behavior_get(m->pool.conns[2], MEMCACHED_BEHAVIOR_NOREPLY), 0);
    assert_int_equal(memcached_behavior_get(m->pool.conns[2], MEMCACHED_BEHAVIOR_DISTRIBUTION),
                     MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    store_close(st);
    o = (struct store_mc_options){
        .connect_timeout_ms = 50, .poll_timeout_ms = 60, .retry_timeout_s = 9};
    st = store_mc_new(&loop, "a:1", &limits, &o, NULL, 0);
    m = mc_of(st);
    assert_int_equal(memcached_behavior_get(m->pool.conns[0], MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT),
                     50);
    assert_int_equal(memcached_behavior_get(m->pool.conns[0], MEMCACHED_BEHAVIOR_POLL_TIMEOUT), 60);
    assert_int_equal(memcached_behavior_get(m->pool.conns[0], MEMCACHED_BEHAVIOR_RETRY_TIMEOUT), 9);
    assert_int_equal(m->pool.failures, MC_DEFAULT_FAILURES);
    assert_int_equal(m->pool.open_ms, MC_DEFAULT_OPEN_MS);
    store_close(st);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_ttl(void **state)
{
    static const struct {
        uint64_t ms, ttl;
    } cases[] = {
        {0, 1},
        {1, 2},
        {999, 2},
        {1000, 2},
        {1001, 3},
        {10000, 11},
        {2591999000, MC_TTL_MAX},
        {2592000000ULL, MC_TTL_MAX},
        {UINT64_MAX / 2, MC_TTL_MAX},
    };
    const uint64_t now = 1700000000000ULL;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(mc_ttl(now + cases[i].ms, now), cases[i].ttl);
    assert_int_equal(mc_ttl(now - 5, now), 1); /* expired already */
    assert_true(mc_after(UINT64_MAX - 3, 10) == UINT64_MAX);
}

/* The schema: keys, values, and data items that disappear when no longer named. */
static void test_schema(void **state)
{
    struct fx *fx = *state;
    uint64_t now = atomic_load(&fx->now);
    struct store_req *r = req_new(STORE_REGISTER, 1, 10);
    r->chid_sp = (struct ids_spelling){.upper = 0xffu, .dashed = 1};
    store_req_free(run(fx, r));
    store_req_free(update(fx, 1, 10, 42, "payload"));
    assert_int_equal(unreg(fx, 1, 11), STORE_OK);
    store_req_free(update(fx, 1, 12, 7, NULL)); /* unlisted, no data */

    char key[MC_KEY_MAX];
    rec_key(key, 1);
    assert_int_equal(strlen(key), 38);
    assert_memory_equal(key, "sp1:u:", 6);
    struct mc_rec rec;
    assert_true(raw_rec(raw, 1, now, &rec));
    assert_false(rec.dropped);
    assert_true(rec.expires == now + LIVE);
    assert_int_equal(rec.n, 3);
    assert_int_equal(rec.n_registered, 1);
    const struct mc_chan *c10 = rec_chan(&rec, 10), *c11 = rec_chan(&rec, 11),
                         *c12 = rec_chan(&rec, 12);
    assert_int_equal(c10->state, MC_REGISTERED);
    assert_true(c10->pending);
    assert_int_equal(c10->version, 42);
    assert_int_equal(c10->data_len, 7);
    assert_true(c10->expires == now + LIVE);
    assert_int_equal(c10->sp.upper, 0xff);
    assert_int_equal(c10->sp.dashed, 1);
    assert_int_equal(c11->state, MC_DELETED);
    assert_false(c11->pending);
    assert_true(c11->expires == now + DEL);
    assert_int_equal(c12->state, MC_UNLISTED);
    assert_true(c12->pending);
    assert_true(c12->nonce == 0);

    /* The data item: named by the nonce, magic and nonce first. */
    uint64_t nonce = c10->nonce;
    assert_true(nonce != 0);
    data_key(key, 1, 10, nonce);
    assert_int_equal(strlen(key), 88);
    size_t len;
    char *v = raw_get(raw, key, &len);
    assert_non_null(v);
    assert_int_equal(len, MC_DATA_HDR_LEN + 7);
    assert_memory_equal(v, "SPD1", 4);
    assert_true(mc_rec_get64((const uint8_t *)v + 4) == nonce);
    assert_memory_equal(v + MC_DATA_HDR_LEN, "payload", 7);
    free(v);
    mc_rec_clear(&rec);

    /* A newer update replaces the item; the old one is deleted. */
    store_req_free(update(fx, 1, 10, 43, "newer"));
    assert_null(raw_get(raw, key, &len));
    assert_true(raw_rec(raw, 1, now, &rec));
    uint64_t nonce2 = rec_chan(&rec, 10)->nonce;
    assert_true(nonce2 != 0 && nonce2 != nonce);
    mc_rec_clear(&rec);
    /* An older one writes no item at all, and leaves the newer. */
    store_req_free(update(fx, 1, 10, 1, "older"));
    data_key(key, 1, 10, nonce2);
    v = raw_get(raw, key, &len);
    assert_non_null(v);
    free(v);
    /* The ack deletes it. */
    ack(fx, 1, 10, 43);
    assert_null(raw_get(raw, key, &len));
    /* So does an unregister, and a drop. */
    store_req_free(update(fx, 1, 10, 50, "x"));
    assert_true(raw_rec(raw, 1, now, &rec));
    data_key(key, 1, 10, rec_chan(&rec, 10)->nonce);
    mc_rec_clear(&rec);
    assert_int_equal(unreg(fx, 1, 10), STORE_OK);
    assert_null(raw_get(raw, key, &len));
    store_req_free(update(fx, 1, 12, 51, "y"));
    assert_true(raw_rec(raw, 1, now, &rec));
    data_key(key, 1, 12, rec_chan(&rec, 12)->nonce);
    mc_rec_clear(&rec);
    v = raw_get(raw, key, &len);
    assert_non_null(v);
    free(v);
    assert_true(hello_reset(fx, 1, MAXCH + 1, 90));
    assert_null(raw_get(raw, key, &len));
    assert_true(raw_rec(raw, 1, now, &rec));
    assert_true(rec.dropped);
    assert_int_equal(rec.n, 0);
    assert_true(rec.expires == now + DEL);
    mc_rec_clear(&rec);
}

/* memcached's TTLs are set: a record and a data item vanish by themselves (real seconds). */
static void test_real_ttl(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = MAXCH, .timeout_live_ms = 500, .timeout_del_ms = 500};
    store_set_limits(fx->st, &l);
    store_req_free(update(fx, 1, 10, 1, "data"));
    struct mc_rec rec;
    uint64_t now = atomic_load(&fx->now);
    assert_true(raw_rec(raw, 1, now, &rec));
    char dkey[MC_KEY_MAX], rkey[MC_KEY_MAX];
    data_key(dkey, 1, 10, rec_chan(&rec, 10)->nonce);
    mc_rec_clear(&rec);
    rec_key(rkey, 1);
    size_t len;
    char *v = raw_get(raw, dkey, &len);
    assert_non_null(v);
    free(v);
    usleep(3100 * 1000); /* TTL 2 s, plus memcached's one-second clock */
    assert_null(raw_get(raw, dkey, &len));
    assert_null(raw_get(raw, rkey, &len));
}

/* Values that fail validation are treated as absent, counted, and overwritten. */
static void test_corrupt_records(void **state)
{
    struct fx *fx = *state;
    uint8_t good[MC_HDR_LEN + 2 * MC_ENTRY_LEN];
    struct mc_chan chans[2];
    struct mc_rec rec = {.live = true, .n = 2, .chans = chans};
    memset(chans, 0, sizeof(chans));
    uint64_t now = atomic_load(&fx->now);
    rec.expires = now + LIVE;
    make_id(chans[0].chid, 10);
    make_id(chans[1].chid, 11);
    chans[0].state = MC_REGISTERED;
    chans[1].state = MC_UNLISTED;
    chans[1].pending = true;
    chans[1].version = 3;
    chans[1].expires = now + LIVE;
    size_t len;
    uint8_t *enc = mc_rec_encode(&rec, &len);
    assert_int_equal(len, sizeof(good));
    memcpy(good, enc, len);
    free(enc);

    /* The good value first: it is read as it is. */
    char key[MC_KEY_MAX];
    rec_key(key, 1);
    raw_set(raw, key, good, sizeof(good));
    assert_int_equal(pending_version(fx, 1, 11), 3);
    assert_int_equal(mc_stats(fx->st).corrupt, 0);

    enum { E0 = MC_HDR_LEN, E1 = MC_HDR_LEN + MC_ENTRY_LEN };
    static const struct {
        const char *name;
        size_t len; /* of the good value to keep, 0: all */
        size_t at;  /* byte to change */
        uint8_t to;
    } cases[] = {
        {"one byte", 1, 0, 0},
        {"short header", 4, 0, 'S'},
        {"bad magic", 0, 0, 'X'},
        {"unknown record flag", 0, 4, 0x02},
        {"dropped with channels", 0, 4, MC_REC_DROPPED},
        {"count too high", 0, 13, 3},
        {"count too low", 0, 13, 1},
        {"truncated entry", sizeof(good) - 1, 0, 'S'},
        {"state 0", 0, E0 + 16, 0},
        {"state 4", 0, E0 + 16, 4},
        {"unknown channel flag", 0, E0 + 17, 0x80},
        {"same chid twice", 0, 0, 'S'}, /* made below */
        {"unsorted chids", 0, E0, 0xff},
        {"deleted with pending", 0, E1 + 16, MC_DELETED},
        {"version without pending", 0, E0 + 22, 1},
        {"nonce without pending", 0, E0 + 38, 1},
        {"nonce without length", 0, E1 + 38, 1},
        {"length without nonce", 0, E1 + 46, 1},
        {"length too big", 0, E1 + 49, 0x7f},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t bad[sizeof(good)];
        memcpy(bad, good, sizeof(good));
        size_t blen = cases[i].len ? cases[i].len : sizeof(good);
        if (!strcmp(cases[i].name, "same chid twice"))
            memcpy(bad + E1, bad + E0, IDS_BYTES);
        else
            bad[cases[i].at] = cases[i].to;
        if (!strcmp(cases[i].name, "length too big")) {
            mc_rec_put64(bad + E1 + 38, 5); /* a nonce, and a length over MC_DATA_MAX */
            mc_rec_put32(bad + E1 + 46, MC_DATA_MAX + 1);
        }
        raw_set(raw, key, bad, blen);
        uint64_t before = mc_stats(fx->st).corrupt;
        struct store_req *f = fetch(fx, 1);
        if (f->n_updates != 0 || mc_stats(fx->st).corrupt != before + 1)
            fail_msg("%s: read as a record", cases[i].name);
        store_req_free(f);
        /* The next write replaces it with a valid record. */
        assert_int_equal(reg(fx, 1, 20), STORE_OK);
        assert_true(raw_rec(raw, 1, now, &rec));
        assert_int_equal(rec.n, 1);
        mc_rec_clear(&rec);
    }
    /* An empty value, a foreign value, and a record that has expired. */
    raw_set(raw, key, "", 0);
    assert_int_equal(fetch_count(fx, 1), 0);
    raw_set(raw, key, "hello, world", 12);
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_true(hello_reset(fx, 1, 1, 90));
    raw_set(raw, key, good, sizeof(good));
    advance(fx, LIVE);
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_true(hello_reset(fx, 1, 1, 91));
    assert_int_equal(update_status(fx, 1, 11, 1), STORE_OK); /* overwrites the old value */
    assert_int_equal(pending_version(fx, 1, 11), 1);
}

/* Data items that are gone or not ours: the update goes without data. */
static void test_bad_data_items(void **state)
{
    struct fx *fx = *state;
    static const char *const kinds[] = {"missing", "bad magic", "other nonce", "bad length"};
    uint64_t now = atomic_load(&fx->now);
    for (unsigned k = 0; k < 4; k++) {
        store_req_free(update(fx, 1 + k, 10, 5, "payload"));
        struct mc_rec rec;
        assert_true(raw_rec(raw, 1 + k, now, &rec));
        uint64_t nonce = rec_chan(&rec, 10)->nonce;
        mc_rec_clear(&rec);
        char key[MC_KEY_MAX];
        data_key(key, 1 + k, 10, nonce);
        uint8_t v[MC_DATA_HDR_LEN + 8];
        memcpy(v, "SPD1", 4);
        mc_rec_put64(v + 4, nonce);
        memcpy(v + MC_DATA_HDR_LEN, "payload!", 8);
        size_t len = MC_DATA_HDR_LEN + 7;
        if (k == 0)
            memcached_delete(raw, key, strlen(key), 0);
        else if (k == 1)
            v[0] = 'X';
        else if (k == 2)
            mc_rec_put64(v + 4, nonce + 1);
        else
            len++;
        if (k)
            raw_set(raw, key, v, len);
        struct store_mc_stats before = mc_stats(fx->st);
        struct store_req *f = fetch(fx, 1 + k);
        const struct store_update *u = find_update(f, 10);
        if (!u || u->version != 5 || u->data)
            fail_msg("%s: not delivered without data", kinds[k]);
        store_req_free(f);
        struct store_mc_stats after = mc_stats(fx->st);
        assert_int_equal(after.data_lost, before.data_lost + 1);
        assert_int_equal(after.corrupt, before.corrupt + (k != 0));
        /* An older update now gets the pending one back, without data. */
        struct store_req *r = update(fx, 1 + k, 10, 4, "older");
        assert_int_equal(r->status, STORE_OK);
        assert_int_equal(r->updates[0].version, 5);
        assert_null(r->updates[0].data);
        store_req_free(r);
    }
}

/* ---- conflicts, made deterministic by the hook ---- */

struct conflict {
    struct fx *fx;
    struct store *other;   /* the second node */
    int armed;             /* hook calls left to act on */
    int skip;              /* hook calls to let pass first */
    struct store_req *req; /* what the second node does (exec'd directly, on its worker 0) */
    bool touch;            /* rewrite the record unchanged instead (a new CAS value) */
    bool delete_data;      /* delete the data item of uaid 1, channel 10 instead */
    int acted;
};

static void conflict_hook(void *arg, unsigned worker, const uint8_t uaid[IDS_BYTES])
{
    struct conflict *c = arg;
    if (c->skip > 0) {
        c->skip--;
        return;
    }
    if (c->armed <= 0)
        return;
    c->armed--;
    c->acted++;
    if (c->touch) {
        char key[MC_KEY_MAX];
        size_t len;
        mc_rec_key(key, uaid);
        char *v = raw_get(raw, key, &len);
        assert_non_null(v);
        raw_set(raw, key, v, len);
        free(v);
    } else if (c->delete_data) {
        struct mc_rec rec;
        assert_true(raw_rec(raw, 1, atomic_load(&c->fx->now), &rec));
        char key[MC_KEY_MAX];
        data_key(key, 1, 10, rec_chan(&rec, 10)->nonce);
        mc_rec_clear(&rec);
        assert_int_equal(memcached_delete(raw, key, strlen(key), 0), MEMCACHED_SUCCESS);
    } else {
        struct store_req *r = c->req;
        mc_free_updates(r);
        mc_exec(store_backend(c->other), 0, &limits, r);
    }
}

static void conflict_setup(struct fx *fx, struct conflict *c, struct store_req *req, int armed)
{
    memset(c, 0, sizeof(*c));
    c->fx = fx;
    c->other = new_mc(&fx->loop, servers1, &limits, &test_opts);
    assert_int_equal(store_mc_set_clock(c->other, fake_now, fx), 0);
    c->req = req;
    c->armed = armed;
    assert_int_equal(store_mc_set_hook(fx->st, conflict_hook, c), 0);
}

static void conflict_done(struct fx *fx, struct conflict *c)
{
    assert_int_equal(store_mc_set_hook(fx->st, NULL, NULL), 0);
    store_close(c->other);
    store_req_free(c->req);
}

/* An ack of an old version never removes a newer one that landed meanwhile. */
static void test_conflict_ack_vs_update(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    store_req_free(update(fx, 1, 10, 5, "five"));
    conflict_setup(fx, &c, update_req(1, 10, 6, "six"), 1);
    ack(fx, 1, 10, 5);
    assert_int_equal(c.acted, 1);
    assert_int_equal(c.req->status, STORE_OK);
    assert_int_equal(mc_stats(fx->st).conflicts, 1);
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].version, 6);
    assert_string_equal(f->updates[0].data, "six");
    store_req_free(f);
    conflict_done(fx, &c);
}

/* Two nodes registering at once never pass max_channels together. */
static void test_conflict_register_vs_register(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    conflict_setup(fx, &c, req_new(STORE_REGISTER, 1, 13), 1);
    assert_int_equal(reg(fx, 1, 12), STORE_TOO_MANY); /* 13 took the last place */
    assert_int_equal(c.req->status, STORE_OK);
    struct mc_rec rec;
    assert_true(raw_rec(raw, 1, atomic_load(&fx->now), &rec));
    assert_int_equal(rec.n_registered, MAXCH);
    assert_non_null(rec_chan(&rec, 13));
    assert_null(rec_chan(&rec, 12));
    mc_rec_clear(&rec);
    conflict_done(fx, &c);
}

/* An update racing an unregister answers GONE, and leaves no data item behind. */
static void test_conflict_update_vs_unregister(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    conflict_setup(fx, &c, req_new(STORE_UNREGISTER, 1, 10), 1);
    struct store_req *r = update(fx, 1, 10, 1, "data");
    assert_int_equal(r->status, STORE_GONE);
    assert_int_equal(r->n_updates, 0);
    store_req_free(r);
    assert_int_equal(c.req->status, STORE_OK);
    assert_int_equal(fetch_count(fx, 1), 0);
    struct mc_rec rec;
    assert_true(raw_rec(raw, 1, atomic_load(&fx->now), &rec));
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.chans[0].state, MC_DELETED);
    mc_rec_clear(&rec);
    conflict_done(fx, &c);
}

/* A register racing an unregister of another channel: both edits land. */
static void test_conflict_register_vs_unregister(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    conflict_setup(fx, &c, req_new(STORE_UNREGISTER, 1, 10), 1);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    struct mc_rec rec;
    assert_true(raw_rec(raw, 1, atomic_load(&fx->now), &rec));
    assert_int_equal(rec_chan(&rec, 10)->state, MC_DELETED);
    assert_int_equal(rec_chan(&rec, 11)->state, MC_REGISTERED);
    assert_int_equal(rec.n_registered, 1);
    mc_rec_clear(&rec);
    conflict_done(fx, &c);
}

/* An older update racing a newer one: the newer stays, and its data with it. */
static void test_conflict_update_vs_update(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    conflict_setup(fx, &c, update_req(1, 10, 9, "nine"), 1);
    struct store_req *r = update(fx, 1, 10, 8, "eight");
    assert_int_equal(r->status, STORE_OK);
    assert_int_equal(r->updates[0].version, 9);
    assert_string_equal(r->updates[0].data, "nine");
    store_req_free(r);
    assert_int_equal(mc_stats(fx->st).conflicts, 1);
    conflict_done(fx, &c);
}

/* Collecting races a replace: the data item read is gone, the record read again. */
static void test_conflict_fetch_vs_replace(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    store_req_free(update(fx, 1, 10, 5, "five"));
    conflict_setup(fx, &c, update_req(1, 10, 6, "six"), 1);
    struct store_req *f = fetch(fx, 1); /* no write: the hook acts before the data read */
    assert_int_equal(c.acted, 1);
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].version, 6);
    assert_string_equal(f->updates[0].data, "six");
    store_req_free(f);
    assert_int_equal(mc_stats(fx->st).data_lost, 0);
    /* The same with the item deleted under the record's nose: lost, delivered without. */
    c.delete_data = true;
    c.armed = 1;
    f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].version, 6);
    assert_null(f->updates[0].data);
    store_req_free(f);
    assert_int_equal(mc_stats(fx->st).data_lost, 1);
    conflict_done(fx, &c);
}

/* Conflicts without end: the edit gives up after MC_CAS_TRIES with STORE_ERROR. */
static void test_conflict_endless(void **state)
{
    struct fx *fx = *state;
    struct conflict c;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    conflict_setup(fx, &c, NULL, 1000);
    c.touch = true;
    assert_int_equal(reg(fx, 1, 11), STORE_ERROR);
    assert_int_equal(mc_stats(fx->st).conflicts, MC_CAS_TRIES);
    struct store_req *r = update(fx, 1, 11, 1, "data");
    assert_int_equal(r->status, STORE_ERROR);
    assert_int_equal(r->n_updates, 0);
    store_req_free(r);
    assert_int_equal(mc_stats(fx->st).conflicts, 2 * MC_CAS_TRIES);
    /* The hook gone, the edits go through. */
    c.armed = 0;
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
    conflict_done(fx, &c);
}

/* A record that would outgrow memcached's item sheds its oldest tombstones, or fails. */
static void test_record_size_limit(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = 10, .timeout_live_ms = LIVE, .timeout_del_ms = DEL};
    store_set_limits(fx->st, &l);
    mc_backend(fx)->record_max = MC_HDR_LEN + 5 * MC_ENTRY_LEN; /* five channels */
    assert_int_equal(reg(fx, 1, 1), STORE_OK);
    assert_int_equal(reg(fx, 1, 2), STORE_OK);
    for (unsigned c = 20; c < 23; c++) {
        assert_int_equal(unreg(fx, 1, c), STORE_OK); /* tombstones expiring in this order */
        advance(fx, 1);
    }
    assert_int_equal(unreg(fx, 1, 23), STORE_OK); /* six: the oldest tombstone (20) goes */
    for (unsigned c = 21; c < 24; c++)
        assert_int_equal(update_status(fx, 1, c, 1), STORE_GONE);
    struct mc_rec rec;
    uint64_t now = atomic_load(&fx->now);
    assert_true(raw_rec(raw, 1, now, &rec));
    assert_int_equal(rec.n, 5);
    assert_null(rec_chan(&rec, 20));
    mc_rec_clear(&rec);
    /* 20 accepts updates again; storing one sheds the next oldest tombstone, 21. */
    assert_int_equal(update_status(fx, 1, 20, 1), STORE_OK);
    assert_true(raw_rec(raw, 1, now, &rec));
    assert_int_equal(rec.n, 5);
    assert_int_equal(rec_chan(&rec, 20)->state, MC_UNLISTED);
    assert_null(rec_chan(&rec, 21));
    mc_rec_clear(&rec);
}

static void test_record_size_limit_registered(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = 10, .timeout_live_ms = LIVE, .timeout_del_ms = DEL};
    store_set_limits(fx->st, &l);
    mc_backend(fx)->record_max = MC_HDR_LEN + 5 * MC_ENTRY_LEN;
    for (unsigned c = 1; c <= 5; c++)
        assert_int_equal(reg(fx, 1, c), STORE_OK);
    assert_int_equal(reg(fx, 1, 6), STORE_ERROR); /* nothing to shed */
    assert_int_equal(update_status(fx, 1, 8, 1), STORE_ERROR);
    /* A new tombstone is the one tombstone there is to shed: the unregister is not kept. */
    assert_int_equal(unreg(fx, 1, 7), STORE_OK);
    struct mc_rec kept;
    assert_true(raw_rec(raw, 1, atomic_load(&fx->now), &kept));
    assert_int_equal(kept.n, 5);
    assert_null(rec_chan(&kept, 7));
    mc_rec_clear(&kept);
    assert_int_equal(update_status(fx, 1, 5, 1), STORE_OK); /* edits in place still work */
    /* Equal expiries: exactly the excess goes. */
    struct mc_rec rec = {0};
    for (unsigned c = 0; c < 4; c++) {
        uint8_t id[IDS_BYTES];
        make_id(id, c);
        bool found;
        size_t i = mc_rec_pos(&rec, id, &found);
        struct mc_chan *ch = mc_rec_insert(&rec, i, id, MC_DELETED);
        ch->expires = c == 3 ? 9 : 7;
    }
    assert_int_equal(mc_rec_fit(&rec, MC_HDR_LEN + 2 * MC_ENTRY_LEN), 0);
    assert_int_equal(rec.n, 2);
    assert_int_equal(rec.chans[0].expires + rec.chans[1].expires, 16);
    mc_rec_clear(&rec);
}

/* ---- several nodes at once ---- */

enum { NODES = 4, PER_NODE = 8 };

struct batch {
    struct store_req *reqs[512];
    struct store *dest[512];
    size_t n;
};

static size_t batch_left;

static void batch_done(struct store_req *req)
{
    batch_left--;
}

static struct store_req *batch_add(struct batch *b, struct store *st, struct store_req *req)
{
    assert_true(b->n < 512);
    b->reqs[b->n] = req;
    b->dest[b->n++] = st;
    return req;
}

/* Submits every request at once (the nodes' workers run them concurrently) and waits. */
static void batch_run(struct fx *fx, struct batch *b)
{
    batch_left = b->n;
    for (size_t i = 0; i < b->n; i++) {
        b->reqs[i]->done = batch_done;
        b->reqs[i]->owner = i;
        store_submit(b->dest[i], b->reqs[i]);
    }
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(batch_left, 0);
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        store_req_free(b->reqs[i]);
    b->n = 0;
}

static void test_nodes_concurrent(void **state)
{
    struct fx *fx = *state;
    struct store_limits l = {.max_channels = 100, .timeout_live_ms = LIVE, .timeout_del_ms = DEL};
    struct store *nodes[NODES];
    struct batch *b = calloc(1, sizeof(*b));
    uint64_t now = atomic_load(&fx->now);
    for (int k = 0; k < NODES; k++) {
        nodes[k] = new_mc(&fx->loop, servers1, &l, &test_opts);
        assert_int_equal(store_mc_set_clock(nodes[k], fake_now, fx), 0);
    }

    /* Registers from every node: none lost. */
    for (unsigned k = 0; k < NODES; k++)
        for (unsigned j = 0; j < PER_NODE; j++)
            batch_add(b, nodes[k], req_new(STORE_REGISTER, 1, k * PER_NODE + j));
    batch_run(fx, b);
    for (size_t i = 0; i < b->n; i++)
        assert_int_equal(b->reqs[i]->status, STORE_OK);
    batch_free(b);
    struct mc_rec rec;
    assert_true(raw_rec(raw, 1, now, &rec));
    assert_int_equal(rec.n_registered, NODES * PER_NODE);
    mc_rec_clear(&rec);

    /* Registers over the limit: exactly max_channels win. */
    struct store_limits small = l;
    small.max_channels = 10;
    for (int k = 0; k < NODES; k++)
        store_set_limits(nodes[k], &small);
    for (unsigned k = 0; k < NODES; k++)
        for (unsigned j = 0; j < PER_NODE; j++)
            batch_add(b, nodes[k], req_new(STORE_REGISTER, 2, k * PER_NODE + j));
    batch_run(fx, b);
    size_t ok = 0;
    assert_true(raw_rec(raw, 2, now, &rec));
    for (size_t i = 0; i < b->n; i++) {
        enum store_status s = b->reqs[i]->status;
        assert_true(s == STORE_OK || s == STORE_TOO_MANY);
        ok += s == STORE_OK;
        const struct mc_chan *ch = mc_rec_find(&rec, b->reqs[i]->chid);
        assert_true((s == STORE_OK) == (ch != NULL));
    }
    assert_int_equal(ok, 10);
    assert_int_equal(rec.n_registered, 10);
    mc_rec_clear(&rec);
    batch_free(b);
    for (int k = 0; k < NODES; k++)
        store_set_limits(nodes[k], &l);

    /* Updates on one channel with acks of older versions: the newest stays pending. */
    enum { ROUNDS = 25 };
    for (unsigned i = 0; i < ROUNDS; i++) {
        for (unsigned k = 0; k < NODES; k++) {
            int64_t v = 1 + k + NODES * i;
            char data[16];
            snprintf(data, sizeof(data), "v%d", (int)v);
            batch_add(b, nodes[k], update_req(3, 10, v, data));
            batch_add(b, nodes[(k + 1) % NODES], ack_req(3, 10, v - 2));
        }
    }
    batch_run(fx, b);
    for (size_t i = 0; i < b->n; i++)
        assert_int_equal(b->reqs[i]->status, STORE_OK);
    batch_free(b);
    struct store_req *f = run_on(fx, nodes[0], req_new(STORE_FETCH, 3, 0));
    assert_int_equal(f->n_updates, 1);
    assert_int_equal(f->updates[0].version, NODES * ROUNDS);
    char want[16];
    snprintf(want, sizeof(want), "v%d", NODES * ROUNDS);
    assert_string_equal(f->updates[0].data, want);
    store_req_free(f);

    /* Interleaved register/unregister per node: each node's own order decides. */
    for (unsigned k = 0; k < NODES; k++) {
        for (unsigned j = 0; j < PER_NODE; j++)
            batch_add(b, nodes[k], req_new(STORE_REGISTER, 4, k * PER_NODE + j));
        for (unsigned j = 0; j < PER_NODE; j += 2)
            batch_add(b, nodes[k], req_new(STORE_UNREGISTER, 4, k * PER_NODE + j));
        batch_add(b, nodes[k], req_new(STORE_REGISTER, 4, k * PER_NODE));
    }
    batch_run(fx, b);
    batch_free(b);
    assert_true(raw_rec(raw, 4, now, &rec));
    for (unsigned k = 0; k < NODES; k++) {
        for (unsigned j = 0; j < PER_NODE; j++) {
            const struct mc_chan *ch = rec_chan(&rec, k * PER_NODE + j);
            assert_non_null(ch);
            bool registered = j % 2 == 1 || j == 0;
            assert_int_equal(ch->state, registered ? MC_REGISTERED : MC_DELETED);
        }
    }
    assert_int_equal(rec.n_registered, NODES * (PER_NODE / 2 + 1));
    mc_rec_clear(&rec);

    /* Updates with data on distinct channels: every one is pending, with its own data. */
    for (unsigned k = 0; k < NODES; k++) {
        for (unsigned j = 0; j < PER_NODE; j++) {
            char data[16];
            snprintf(data, sizeof(data), "n%uc%u", k, j);
            batch_add(b, nodes[k], update_req(5, k * PER_NODE + j, 1, data));
        }
    }
    batch_run(fx, b);
    batch_free(b);
    f = run_on(fx, nodes[1], req_new(STORE_FETCH, 5, 0));
    assert_int_equal(f->n_updates, NODES * PER_NODE);
    for (size_t i = 0; i < f->n_updates; i++) {
        unsigned c = id_num(f->updates[i].chid);
        char data[16];
        snprintf(data, sizeof(data), "n%uc%u", c / PER_NODE, c % PER_NODE);
        assert_string_equal(f->updates[i].data, data);
    }
    store_req_free(f);

    uint64_t conflicts = 0;
    for (int k = 0; k < NODES; k++) {
        conflicts += mc_stats(nodes[k]).conflicts;
        store_close(nodes[k]);
    }
    print_message("    (%" PRIu64 " CAS conflicts retried)\n", conflicts);
    free(b);
}

/* A uaid's requests on one node complete in submission order. */
static void test_completion_order(void **state)
{
    struct fx *fx = *state;
    struct store_req *reqs[60];
    for (unsigned i = 0; i < 60; i++) {
        static const enum store_op ops[] = {STORE_REGISTER, STORE_UPDATE, STORE_FETCH,
                                            STORE_ACK,      STORE_HELLO,  STORE_UNREGISTER};
        reqs[i] = req_new(ops[i % 6], i % 3, i % 5);
        reqs[i]->uaid_valid = true;
        reqs[i]->owner = i;
        reqs[i]->done = on_done;
        store_submit(fx->st, reqs[i]);
    }
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 60);
    uint64_t last[3] = {0, 0, 0};
    bool seen[3] = {false, false, false};
    for (unsigned i = 0; i < 60; i++) {
        uint64_t o = fx->order[i];
        if (seen[o % 3])
            assert_true(o > last[o % 3]);
        seen[o % 3] = true;
        last[o % 3] = o;
        assert_true(reqs[o]->status == STORE_OK || reqs[o]->status == STORE_TOO_MANY);
    }
    for (unsigned i = 0; i < 60; i++)
        store_req_free(reqs[i]);
}

static void test_close_outstanding(void **state)
{
    struct fx *fx = *state;
    struct store_req *reqs[20];
    for (unsigned i = 0; i < 20; i++) {
        reqs[i] = update_req(i % 4, 1, 1, "d");
        reqs[i]->owner = i;
        reqs[i]->done = on_done;
        store_submit(fx->st, reqs[i]);
    }
    store_close(fx->st);
    fx->closed = true;
    assert_int_equal(fx->n_completed, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->n_completed, 20);
    for (unsigned i = 0; i < 20; i++) {
        assert_int_equal(reqs[i]->status, STORE_UNAVAILABLE);
        assert_int_equal(reqs[i]->n_updates, 0);
        store_req_free(reqs[i]);
    }
}

/* ---- the circuit breaker ---- */

static void test_breaker_states(void **state)
{
    struct mc_pool p = {.n_servers = 2, .failures = 3, .open_ms = 1000};
    p.breakers = calloc(2, sizeof(*p.breakers));
    assert_int_equal(uv_mutex_init(&p.lock), 0);
    bool probe;
    uint64_t t = 5000;

    assert_true(mc_pool_admit(&p, 0, t, &probe));
    assert_false(probe);
    /* Failures must be consecutive. */
    assert_false(mc_pool_report(&p, 0, true, false, t));
    assert_false(mc_pool_report(&p, 0, true, false, t));
    assert_false(mc_pool_report(&p, 0, false, false, t));
    assert_false(mc_pool_report(&p, 0, true, false, t));
    assert_false(mc_pool_report(&p, 0, true, false, t));
    assert_int_equal(mc_pool_worst(&p), STORE_MC_CLOSED);
    assert_true(mc_pool_report(&p, 0, true, false, t));
    assert_int_equal(mc_pool_worst(&p), STORE_MC_OPEN);
    assert_int_equal(mc_pool_retry_after(&p, t), 1);
    assert_int_equal(mc_pool_retry_after(&p, t + 999), 1);
    /* Open: denied until open_ms has passed; the other server is not concerned. */
    assert_false(mc_pool_admit(&p, 0, t + 999, &probe));
    assert_false(mc_pool_admit(&p, 0, t - 1, &probe)); /* a clock read before the opening */
    assert_true(mc_pool_admit(&p, 1, t, &probe));
    assert_false(probe);
    /* A late report from a call admitted before the opening changes nothing. */
    assert_false(mc_pool_report(&p, 0, true, false, t + 500));
    assert_false(mc_pool_report(&p, 0, false, false, t + 500));
    assert_int_equal(p.breakers[0].state, STORE_MC_OPEN);
    assert_true(p.breakers[0].opened_at == t);
    /* Half-open: one probe, the others denied while it is out. */
    assert_true(mc_pool_admit(&p, 0, t + 1000, &probe));
    assert_true(probe);
    assert_int_equal(mc_pool_worst(&p), STORE_MC_HALF_OPEN);
    assert_false(mc_pool_admit(&p, 0, t + 1001, &probe));
    assert_int_equal(mc_pool_retry_after(&p, t + 1001), 1);
    /* The probe fails: open again, from then. */
    assert_true(mc_pool_report(&p, 0, true, true, t + 1200));
    assert_false(mc_pool_admit(&p, 0, t + 2199, &probe));
    assert_true(mc_pool_admit(&p, 0, t + 2200, &probe));
    assert_true(probe);
    /* The probe succeeds: closed, and calls go out. */
    assert_false(mc_pool_report(&p, 0, false, true, t + 2210));
    assert_int_equal(mc_pool_worst(&p), STORE_MC_CLOSED);
    assert_true(mc_pool_admit(&p, 0, t + 2211, &probe));
    assert_false(probe);
    /* Retry-After: the longest wait over the open breakers, rounded up. */
    p.open_ms = 4500;
    for (int i = 0; i < 3; i++)
        mc_pool_report(&p, 1, true, false, t + 3000);
    assert_int_equal(mc_pool_retry_after(&p, t + 3000), 5);
    assert_int_equal(mc_pool_retry_after(&p, t + 6500), 1);
    /* What counts as unreachable. */
    assert_true(mc_pool_down(MEMCACHED_TIMEOUT));
    assert_true(mc_pool_down(MEMCACHED_CONNECTION_FAILURE));
    assert_true(mc_pool_down(MEMCACHED_SERVER_TEMPORARILY_DISABLED));
    assert_true(mc_pool_down(MEMCACHED_SERVER_MARKED_DEAD));
    assert_false(mc_pool_down(MEMCACHED_SUCCESS));
    assert_false(mc_pool_down(MEMCACHED_NOTFOUND));
    assert_false(mc_pool_down(MEMCACHED_DATA_EXISTS));
    assert_false(mc_pool_down(MEMCACHED_E2BIG));
    assert_false(mc_pool_down(MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE));
    uv_mutex_destroy(&p.lock);
    free(p.breakers);
}

/* Which server (by position) holds uaid's keys, asked of a store's own connection. */
static unsigned server_of(struct store *st, unsigned uaid)
{
    struct mc *m = mc_of(st);
    struct mc_x x = {.m = m, .worker = 0, .mc = m->pool.conns[0]};
    uint8_t id[IDS_BYTES];
    make_id(id, uaid);
    mc_x_target(&x, id);
    return x.server;
}

static double elapsed_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e9;
}

/* Runs one FETCH of uaid; returns its status and checks the time it took. */
static enum store_status timed_fetch(struct fx *fx, unsigned uaid, double max_s)
{
    uint64_t t0 = uv_hrtime();
    enum store_status s = simple_on(fx, fx->st, STORE_FETCH, uaid, 0);
    double took = elapsed_since(t0);
    if (took > max_s)
        fail_msg("a request took %.3f s (bound %.1f s)", took, max_s);
    return s;
}

/* Retries FETCH until it works (the breaker's probe goes through); false after deadline_s. */
static bool wait_recovered(struct fx *fx, unsigned uaid, double deadline_s)
{
    uint64_t t0 = uv_hrtime();
    while (elapsed_since(t0) < deadline_s) {
        if (timed_fetch(fx, uaid, 2.0) == STORE_OK)
            return true;
        usleep(50000);
    }
    return false;
}

/* memcached hangs (SIGSTOP): bounded failures, then the breaker fails fast; SIGCONT heals. */
static void test_hung_memcached(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    store_req_free(update(fx, 1, 10, 7, "kept"));
    mcd_stop(&mcd1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_CLOSED);
        assert_int_equal(timed_fetch(fx, 1, 2.0), STORE_UNAVAILABLE);
    }
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_OPEN);
    struct store_mc_stats s = mc_stats(fx->st);
    assert_int_equal(s.breaker_opens, 1);
    assert_int_equal(s.unreachable, 3);
    assert_int_equal(store_mc_retry_after(fx->st), 1);
    /* Open: every op fails at once, without a memcached call. */
    static const enum store_op ops[] = {STORE_HELLO, STORE_REGISTER, STORE_UNREGISTER,
                                        STORE_ACK,   STORE_UPDATE,   STORE_FETCH};
    for (int i = 0; i < 6; i++) {
        struct store_req *r = req_new(ops[i], 1, 10);
        r->uaid_valid = true;
        run(fx, r);
        assert_int_equal(r->status, STORE_UNAVAILABLE);
        assert_int_equal(r->n_updates, 0);
        assert_false(r->reset);
        store_req_free(r);
    }
    struct store_mc_stats s2 = mc_stats(fx->st);
    assert_true(s2.calls == s.calls);
    assert_int_equal(s2.denied, s.denied + 6);

    /* Still hung when the probe goes: it fails, and the breaker opens again. */
    usleep(350 * 1000);
    assert_int_equal(timed_fetch(fx, 1, 2.0), STORE_UNAVAILABLE);
    assert_int_equal(mc_stats(fx->st).breaker_opens, 2);
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_OPEN);

    assert_int_equal(kill(mcd1.pid, SIGCONT), 0);
    assert_true(wait_recovered(fx, 1, 5.0));
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_CLOSED);
    /* Nothing was lost, and writes work. */
    struct store_req *f = fetch(fx, 1);
    assert_int_equal(f->n_updates, 1);
    assert_string_equal(f->updates[0].data, "kept");
    store_req_free(f);
    assert_int_equal(reg(fx, 1, 11), STORE_OK);
}

/* memcached dies: UNAVAILABLE at once; restarted empty, the store recovers by itself. */
static void test_killed_memcached(void **state)
{
    struct fx *fx = *state;
    assert_false(hello_reset(fx, 1, 0, 90));
    assert_int_equal(reg(fx, 1, 10), STORE_OK);
    store_req_free(update(fx, 1, 10, 7, "lost"));
    mcd_kill(&mcd1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(timed_fetch(fx, 1, 2.0), STORE_UNAVAILABLE);
    struct store_req *r = update(fx, 1, 10, 8, "x");
    assert_int_equal(r->status, STORE_UNAVAILABLE);
    store_req_free(r);
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_OPEN);
    assert_true(mcd_spawn(&mcd1)); /* same port, empty */
    assert_true(wait_recovered(fx, 1, 10.0));
    assert_int_equal(store_mc_breaker_state(fx->st), STORE_MC_CLOSED);
    /* memcached kept nothing: the uaid is unknown, and everything works again. */
    assert_int_equal(fetch_count(fx, 1), 0);
    assert_true(hello_reset(fx, 1, 1, 91));
    assert_int_equal(reg(fx, 91, 10), STORE_OK);
    assert_int_equal(update_status(fx, 91, 10, 1), STORE_OK);
}

/* Two servers: keys of a uaid stay on one; one server hung leaves the other's uaids working. */
static void test_two_servers(void **state)
{
    struct fx *fx = *state;
    assert_true(mcd_start(&mcd2));
    char list[128];
    snprintf(list, sizeof(list), "127.0.0.1:%d, 127.0.0.1:%d", mcd1.port, mcd2.port);
    uv_loop_t *loop = &fx->loop;
    struct store *two = new_mc(loop, list, &limits, &test_opts);
    assert_int_equal(store_mc_set_clock(two, fake_now, fx), 0);
    store_close(fx->st);
    fx->st = two;

    unsigned ua = 0, ub = 0;
    for (unsigned u = 1; u < 1000 && (!ua || !ub); u++) {
        if (server_of(two, u) == 0 && !ua)
            ua = u;
        if (server_of(two, u) == 1 && !ub)
            ub = u;
    }
    assert_true(ua && ub);
    memcached_st *raw2 = raw_connect(mcd2.port);
    store_req_free(update(fx, ua, 10, 1, "on one"));
    store_req_free(update(fx, ub, 10, 1, "on two"));
    /* Record and data item of ub both on server two; none of it on server one. */
    uint64_t now = atomic_load(&fx->now);
    struct mc_rec rec;
    assert_false(raw_rec(raw, ub, now, &rec));
    assert_true(raw_rec(raw2, ub, now, &rec));
    char key[MC_KEY_MAX];
    size_t len;
    data_key(key, ub, 10, rec_chan(&rec, 10)->nonce);
    mc_rec_clear(&rec);
    char *v = raw_get(raw2, key, &len);
    assert_non_null(v);
    free(v);
    assert_true(raw_rec(raw, ua, now, &rec));
    mc_rec_clear(&rec);

    mcd_stop(&mcd2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(timed_fetch(fx, ub, 2.0), STORE_UNAVAILABLE);
    assert_int_equal(store_mc_breaker_state(two), STORE_MC_OPEN);
    assert_int_equal(mc_of(two)->pool.breakers[0].state, STORE_MC_CLOSED);
    /* Server one's uaids are served all along. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(timed_fetch(fx, ua, 0.5), STORE_OK);
    assert_int_equal(pending_version(fx, ua, 10), 1);
    assert_int_equal(kill(mcd2.pid, SIGCONT), 0);
    assert_true(wait_recovered(fx, ub, 5.0));
    assert_int_equal(store_mc_breaker_state(two), STORE_MC_CLOSED);
    memcached_free(raw2);
    mcd_kill(&mcd2);
}

/* ---- allocation failures ---- */

struct alloc_case {
    const char *name;
    void (*prepare)(struct fx *fx);
    struct store_req *(*op)(void);
    bool may_pass; /* no allocation whose failure is an error */
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

/* Eight unlisted channels: the next one makes the channel array grow. */
static void prep_full_array(struct fx *fx)
{
    for (unsigned c = 100; c < 108; c++)
        assert_int_equal(update_status(fx, 1, c, 1), STORE_OK);
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

static struct store_req *op_hello_drop(void)
{
    struct store_req *req = op_hello_pending();
    req->n_channels = MAXCH + 1;
    make_id(req->new_uaid, 2);
    return req;
}

static struct store_req *op_register(void)
{
    return req_new(STORE_REGISTER, 1, 50);
}

static struct store_req *op_unregister(void)
{
    return req_new(STORE_UNREGISTER, 1, 10);
}

static struct store_req *op_update(void)
{
    return update_req(1, 200, 2, "some data");
}

static struct store_req *op_update_existing(void)
{
    return update_req(1, 10, 2, "newer data");
}

static struct store_req *op_update_older(void)
{
    return update_req(1, 10, 0, "older data");
}

static struct store_req *op_fetch(void)
{
    return req_new(STORE_FETCH, 1, 0);
}

static struct store_req *op_ack(void)
{
    return ack_req(1, 10, 5);
}

static void test_alloc_failures(void **state)
{
    static const struct alloc_case cases[] = {
        {"hello new", prep_none, op_hello_new, false},
        {"hello pending", prep_pending, op_hello_pending, false},
        {"hello drop", prep_pending, op_hello_drop, false},
        {"register", prep_none, op_register, false},
        {"register grows", prep_full_array, op_register, false},
        {"unregister", prep_pending, op_unregister, false},
        {"update new", prep_none, op_update, false},
        {"update new grows", prep_full_array, op_update, false},
        {"update existing", prep_pending, op_update_existing, false},
        {"update older", prep_pending, op_update_older, false},
        {"fetch", prep_pending, op_fetch, false},
        {"ack", prep_pending, op_ack, false},
    };
    struct fx *fx = *state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        bool saw_error = false, saw_ok = false;
        for (long fail = 1; !saw_ok; fail++) {
            struct fx *f = NULL;
            setup_mc((void **)&f);
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
                if (req->status == STORE_ERROR) {
                    saw_error = true;
                    assert_int_equal(req->n_updates, 0);
                    assert_false(req->reset);
                }
            }
            store_req_free(req);
            /* The store still works. */
            assert_int_equal(reg(f, 4, 77), STORE_OK);
            struct store_req *u = update(f, 4, 77, 9, "ok");
            assert_int_equal(u->status, STORE_OK);
            store_req_free(u);
            assert_int_equal(pending_version(f, 4, 77), 9);
            void *p = f;
            teardown(&p);
            assert_true(fail < 60);
        }
        if (!cases[k].may_pass && !saw_error)
            fail_msg("%s: no allocation failure gave STORE_ERROR", cases[k].name);
    }
    cur = fx;
}

static void test_new_alloc_failures(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (long fail = 1; fail <= 3; fail++) {
        char err[128] = "";
        fail_alloc_at(fail);
        assert_null(store_mc_new(&loop, "a:1,b:2", &limits, NULL, err, sizeof(err)));
        assert_string_equal(err, "out of memory");
    }
    fail_alloc_at(0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the two backends side by side ---- */

enum { MU = 6, MC = 10, M_MAX = 4, M_LIVE = 60, M_DEL = 35 };

static uint64_t rng_state = 0x243f6a8885a308d3ULL;
static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static struct store_req *random_req(int step)
{
    static const enum store_op ops[] = {STORE_HELLO, STORE_REGISTER, STORE_UNREGISTER,
                                        STORE_ACK,   STORE_UPDATE,   STORE_FETCH};
    struct store_req *req = req_new(ops[rnd(6)], rnd(MU), rnd(MC));
    req->chid_sp.upper = rnd(4) ? 0 : (uint32_t)rng_state;
    req->chid_sp.dashed = (uint8_t)rnd(2);
    switch (req->op) {
    case STORE_HELLO:
        req->uaid_valid = rnd(5) != 0;
        req->n_channels = rnd(M_MAX + 3);
        make_id(req->new_uaid, rnd(MU));
        break;
    case STORE_ACK:
        req->n_acks = rnd(3);
        req->acks = req->n_acks ? calloc(req->n_acks, sizeof(*req->acks)) : NULL;
        for (size_t i = 0; i < req->n_acks; i++) {
            make_id(req->acks[i].chid, rnd(MC));
            req->acks[i].version = rnd(8);
        }
        break;
    case STORE_UPDATE:
        req->version = rnd(8);
        if (rnd(2)) {
            char buf[16];
            snprintf(buf, sizeof(buf), "d%d", step);
            req->data = strdup(buf);
            req->data_len = strlen(buf);
        }
        break;
    default:
        break;
    }
    return req;
}

static struct store_req *req_copy(const struct store_req *r)
{
    struct store_req *c = store_req_new(r->op);
    memcpy(c->uaid, r->uaid, IDS_BYTES);
    c->uaid_valid = r->uaid_valid;
    c->n_channels = r->n_channels;
    memcpy(c->new_uaid, r->new_uaid, IDS_BYTES);
    memcpy(c->chid, r->chid, IDS_BYTES);
    c->chid_sp = r->chid_sp;
    c->version = r->version;
    if (r->data) {
        c->data = strdup(r->data);
        c->data_len = r->data_len;
    }
    if (r->n_acks) {
        c->acks = calloc(r->n_acks, sizeof(*c->acks));
        memcpy(c->acks, r->acks, r->n_acks * sizeof(*c->acks));
        c->n_acks = r->n_acks;
    }
    return c;
}

static int cmp_update(const void *a, const void *b)
{
    return memcmp(((const struct store_update *)a)->chid, ((const struct store_update *)b)->chid,
                  IDS_BYTES);
}

static void same_result(struct store_req *a, struct store_req *b, int step)
{
    if (a->status != b->status || a->reset != b->reset || a->n_updates != b->n_updates)
        fail_msg("step %d op %d: memory status %d reset %d n %zu, memcached %d %d %zu", step, a->op,
                 a->status, a->reset, a->n_updates, b->status, b->reset, b->n_updates);
    if (!a->n_updates)
        return;
    qsort(a->updates, a->n_updates, sizeof(*a->updates), cmp_update);
    qsort(b->updates, b->n_updates, sizeof(*b->updates), cmp_update);
    for (size_t i = 0; i < a->n_updates; i++) {
        const struct store_update *x = &a->updates[i], *y = &b->updates[i];
        bool same = !memcmp(x->chid, y->chid, IDS_BYTES) && x->version == y->version &&
                    x->chid_sp.upper == y->chid_sp.upper &&
                    x->chid_sp.dashed == y->chid_sp.dashed && x->data_len == y->data_len &&
                    !x->data == !y->data && (!x->data || !memcmp(x->data, y->data, x->data_len));
        if (!same)
            fail_msg("step %d op %d: update %zu differs", step, a->op, i);
    }
}

static void test_same_as_memory(void **state)
{
    struct fx *fx = *state;
    const struct store_limits l = {M_MAX, M_LIVE, M_DEL};
    struct store *mem = store_mem_new(&fx->loop, &l);
    assert_int_equal(store_mem_set_clock(mem, fake_now, fx), 0);
    store_set_limits(fx->st, &l);
    for (int i = 1; i <= 3000; i++) {
        advance(fx, rnd(4));
        struct store_req *a = random_req(i);
        struct store_req *b = req_copy(a);
        run_on(fx, mem, a);
        run_on(fx, fx->st, b);
        same_result(a, b, i);
        store_req_free(a);
        store_req_free(b);
    }
    store_close(mem);
}

int main(void)
{
#define BOTH(f)                                                                                    \
    {"memory: " #f, f, setup_mem, teardown, NULL},                                                 \
    {                                                                                              \
        "memcached: " #f, f, setup_mc, teardown, NULL                                              \
    }
#define MC(f) cmocka_unit_test_setup_teardown(f, setup_mc, teardown)
    const struct CMUnitTest tests[] = {
        BOTH(test_hello_invalid_uaid_resets),
        BOTH(test_hello_unknown),
        BOTH(test_hello_too_many_channels),
        BOTH(test_hello_dropped_uaid_is_unknown),
        BOTH(test_hello_returns_pending),
        BOTH(test_hello_lifetime),
        BOTH(test_activity_refreshes_lifetime),
        BOTH(test_register),
        BOTH(test_register_latest_spelling),
        BOTH(test_register_without_hello_and_on_dropped),
        BOTH(test_unregister),
        BOTH(test_unregister_unlisted),
        BOTH(test_tombstone_outlives_live),
        BOTH(test_ack),
        BOTH(test_ack_many),
        BOTH(test_ack_unlisted_removes_channel),
        BOTH(test_update_versions),
        BOTH(test_update_empty_data_is_none),
        BOTH(test_update_big_data),
        BOTH(test_update_unknown),
        BOTH(test_update_pending_expiry),
        BOTH(test_fetch),
        BOTH(test_bad_op),
        BOTH(test_host_records),
        MC(test_host_schema),
        MC(test_name_and_hooks),
        cmocka_unit_test(test_server_lists),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_ttl),
        MC(test_schema),
        MC(test_real_ttl),
        MC(test_corrupt_records),
        MC(test_bad_data_items),
        MC(test_conflict_ack_vs_update),
        MC(test_conflict_register_vs_register),
        MC(test_conflict_update_vs_unregister),
        MC(test_conflict_register_vs_unregister),
        MC(test_conflict_update_vs_update),
        MC(test_conflict_fetch_vs_replace),
        MC(test_conflict_endless),
        MC(test_record_size_limit),
        MC(test_record_size_limit_registered),
        MC(test_nodes_concurrent),
        MC(test_completion_order),
        MC(test_close_outstanding),
        cmocka_unit_test(test_breaker_states),
        MC(test_same_as_memory),
        MC(test_alloc_failures),
        cmocka_unit_test(test_new_alloc_failures),
        MC(test_hung_memcached),
        MC(test_killed_memcached),
        MC(test_two_servers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
