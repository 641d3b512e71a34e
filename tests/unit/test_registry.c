/*
 * Unit tests of registry: both hash tables under growth, shrinking, deletions inside collision
 * runs (backward shift), the bind/unbind rules, and allocation failures.
 *
 * The module's .c is included so that the tests can check the table invariants, craft keys
 * that collide, and make calloc fail on demand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

/* Allocation failure injection: calloc number fail_at (1-based) from now on fails. */
static long calloc_calls;
static long calloc_fail_at;

static void *fake_calloc(size_t n, size_t size)
{
    calloc_calls++;
    if (calloc_fail_at && calloc_calls == calloc_fail_at)
        return NULL;
    return calloc(n, size);
}

static void fail_calloc_after(long n)
{
    calloc_calls = 0;
    calloc_fail_at = n;
}

#define calloc fake_calloc
#include "../../src/registry.c"
#undef calloc

/* Checks every invariant of the id table; returns the number of entries seen. */
static size_t check_ids(const struct registry *reg)
{
    size_t cap = reg->ids_mask + 1, seen = 0;
    assert_int_equal(cap & (cap - 1), 0);
    assert_true(cap >= REG_MIN_CAP);
    for (size_t i = 0; i < cap; i++) {
        if (!reg->ids[i].id)
            continue;
        seen++;
        /* No empty slot between the entry's home and its slot. */
        for (size_t j = reg_id_home(reg, reg->ids[i].id); j != i; j = (j + 1) & reg->ids_mask)
            assert_true(reg->ids[j].id != 0);
    }
    assert_int_equal(seen, reg->ids_count);
    assert_true(seen * 10 <= cap * 7);
    return seen;
}

static size_t check_uaids(const struct registry *reg)
{
    size_t cap = reg->uaids_mask + 1, seen = 0;
    assert_int_equal(cap & (cap - 1), 0);
    for (size_t i = 0; i < cap; i++) {
        if (!reg->uaids[i].session)
            continue;
        seen++;
        size_t h = reg_uaid_home(reg, reg->uaids[i].uaid, reg->uaids_mask);
        for (size_t j = h; j != i; j = (j + 1) & reg->uaids_mask)
            assert_non_null(reg->uaids[j].session);
    }
    assert_int_equal(seen, reg->uaids_count);
    assert_true(seen * 10 <= cap * 7);
    return seen;
}

static void *conn_of(uint64_t id)
{
    return (void *)(uintptr_t)(id * 2 + 1);
}

static void make_uaid(uint8_t uaid[IDS_BYTES], uint64_t n)
{
    memset(uaid, 0xa5, IDS_BYTES);
    memcpy(uaid, &n, sizeof(n));
}

static void test_siphash_vector(void **state)
{
    /* The reference vector of SipHash-2-4: key 00..0f, message 00..0f. */
    uint8_t k[16], in[16];
    for (int i = 0; i < 16; i++)
        k[i] = in[i] = (uint8_t)i;
    const uint64_t key[2] = {siphash_le64(k), siphash_le64(k + 8)};
    assert_true(siphash16(key, in) == 0x3f2acc7f57c29bdbULL);

    /* Another key gives another hash: the key matters. */
    const uint64_t key2[2] = {key[0] ^ 1, key[1]};
    assert_true(siphash16(key2, in) != 0x3f2acc7f57c29bdbULL);
}

static void test_new_free(void **state)
{
    registry_free(NULL);
    struct registry *reg = registry_new();
    assert_non_null(reg);
    assert_int_equal(registry_count(reg), 0);
    assert_null(registry_find(reg, 1));
    assert_null(registry_find(reg, 0));
    uint8_t u[IDS_BYTES];
    make_uaid(u, 1);
    assert_null(registry_find_uaid(reg, u));
    registry_free(reg);

    /* Two registries have different uaid keys. */
    struct registry *a = registry_new(), *b = registry_new();
    assert_true(a->key[0] != b->key[0] || a->key[1] != b->key[1]);
    registry_free(a);
    registry_free(b);
}

static void test_next_id(void **state)
{
    struct registry *reg = registry_new();
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t id = registry_next_id(reg);
        assert_true(id > prev);
        prev = id;
    }
    /* Never 0, even after wrapping around. */
    reg->last_id = UINT64_MAX - 1;
    assert_true(registry_next_id(reg) == UINT64_MAX);
    assert_true(registry_next_id(reg) == 1);
    registry_free(reg);
}

static void test_add_errors(void **state)
{
    struct registry *reg = registry_new();
    assert_int_equal(registry_add(reg, 0, conn_of(0)), -1);
    assert_int_equal(registry_add(reg, 5, NULL), -1);
    assert_int_equal(registry_count(reg), 0);
    assert_int_equal(registry_add(reg, 5, conn_of(5)), 0);
    /* A second mapping of the same id is refused and the first one kept. */
    assert_int_equal(registry_add(reg, 5, conn_of(6)), -1);
    assert_ptr_equal(registry_find(reg, 5), conn_of(5));
    assert_int_equal(registry_count(reg), 1);
    /* Removing what is not mapped changes nothing. */
    registry_remove(reg, 6);
    registry_remove(reg, 0);
    assert_int_equal(registry_count(reg), 1);
    registry_remove(reg, 5);
    registry_remove(reg, 5);
    assert_int_equal(registry_count(reg), 0);
    assert_null(registry_find(reg, 5));
    check_ids(reg);
    registry_free(reg);
}

static void test_ids_100k(void **state)
{
    enum { N = 100000 };
    struct registry *reg = registry_new();
    static uint64_t ids[N];
    for (size_t i = 0; i < N; i++) {
        ids[i] = registry_next_id(reg);
        assert_int_equal(registry_add(reg, ids[i], conn_of(ids[i])), 0);
    }
    assert_int_equal(registry_count(reg), N);
    assert_int_equal(check_ids(reg), N);
    assert_true(reg->ids_mask + 1 >= N * 10 / 7);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(registry_find(reg, ids[i]), conn_of(ids[i]));
    assert_null(registry_find(reg, ids[N - 1] + 1));

    /* Remove every other id: the rest stays reachable through the shifted runs. */
    for (size_t i = 0; i < N; i += 2)
        registry_remove(reg, ids[i]);
    assert_int_equal(check_ids(reg), N / 2);
    for (size_t i = 0; i < N; i++) {
        if (i % 2)
            assert_ptr_equal(registry_find(reg, ids[i]), conn_of(ids[i]));
        else
            assert_null(registry_find(reg, ids[i]));
    }

    /* Remove the rest: the table shrinks back to its minimum. */
    for (size_t i = 1; i < N; i += 2) {
        registry_remove(reg, ids[i]);
        if (i % 8191 == 1)
            check_ids(reg);
    }
    assert_int_equal(registry_count(reg), 0);
    assert_int_equal(reg->ids_mask + 1, REG_MIN_CAP);
    registry_free(reg);
}

/* Finds n ids > start whose home slot in a table of 16 is home. */
static void colliding_ids(const struct registry *reg, size_t home, uint64_t *out, size_t n,
                          uint64_t start)
{
    for (uint64_t id = start; n; id++) {
        if ((reg_mix64(id) & 15) == home) {
            *out++ = id;
            n--;
        }
    }
}

/*
 * Deletions inside collision runs. Five ids share home 14, three share home 15 and two share
 * home 0, so the run wraps around the end of the table. Each removal order must leave every
 * other entry reachable and the invariants intact.
 */
static void test_ids_backward_shift(void **state)
{
    static const size_t orders[][10] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
        {2, 7, 0, 9, 4, 5, 1, 8, 3, 6}, {5, 6, 7, 0, 1, 2, 3, 4, 8, 9},
        {8, 9, 0, 5, 1, 6, 2, 7, 3, 4}, {4, 3, 9, 0, 8, 1, 7, 2, 6, 5},
    };
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        struct registry *reg = registry_new();
        uint64_t ids[10];
        colliding_ids(reg, 14, ids, 5, 1);
        colliding_ids(reg, 15, ids + 5, 3, 1);
        colliding_ids(reg, 0, ids + 8, 2, 1);
        for (size_t i = 0; i < 10; i++)
            assert_int_equal(registry_add(reg, ids[i], conn_of(ids[i])), 0);
        assert_int_equal(reg->ids_mask + 1, 16); /* no growth: the collisions stay */
        check_ids(reg);
        for (size_t k = 0; k < 10; k++) {
            registry_remove(reg, ids[orders[o][k]]);
            check_ids(reg);
            for (size_t m = 0; m < 10; m++) {
                bool removed = false;
                for (size_t r = 0; r <= k; r++)
                    removed = removed || orders[o][r] == m;
                if (removed)
                    assert_null(registry_find(reg, ids[m]));
                else
                    assert_ptr_equal(registry_find(reg, ids[m]), conn_of(ids[m]));
            }
        }
        assert_int_equal(registry_count(reg), 0);
        registry_free(reg);
    }
}

static void test_ids_alloc_failure(void **state)
{
    fail_calloc_after(1);
    assert_null(registry_new());
    fail_calloc_after(2);
    assert_null(registry_new());
    fail_calloc_after(3);
    assert_null(registry_new());
    fail_calloc_after(0);

    struct registry *reg = registry_new();
    for (uint64_t id = 1; id <= 11; id++)
        assert_int_equal(registry_add(reg, id, conn_of(id)), 0);
    /* The twelfth entry needs growth; when it fails, the table is unchanged. */
    fail_calloc_after(1);
    assert_int_equal(registry_add(reg, 12, conn_of(12)), -1);
    fail_calloc_after(0);
    assert_int_equal(registry_count(reg), 11);
    assert_null(registry_find(reg, 12));
    for (uint64_t id = 1; id <= 11; id++)
        assert_ptr_equal(registry_find(reg, id), conn_of(id));
    assert_int_equal(registry_add(reg, 12, conn_of(12)), 0);
    assert_int_equal(reg->ids_mask + 1, 32);

    /* A failed shrink keeps the larger table, still correct. */
    fail_calloc_after(1);
    for (uint64_t id = 1; id <= 12; id++)
        registry_remove(reg, id);
    fail_calloc_after(0);
    assert_int_equal(registry_count(reg), 0);
    check_ids(reg);
    registry_free(reg);
}

static void test_bind_semantics(void **state)
{
    struct registry *reg = registry_new();
    uint8_t u[IDS_BYTES], v[IDS_BYTES];
    make_uaid(u, 1);
    make_uaid(v, 2);
    int s1, s2, s3;
    void *prev = &prev;

    assert_int_equal(registry_bind_uaid(reg, u, &s1, &prev), 0);
    assert_null(prev);
    assert_ptr_equal(registry_find_uaid(reg, u), &s1);
    assert_null(registry_find_uaid(reg, v));

    /* A newer socket takes the uaid; the previous holder is handed back to be closed. */
    assert_int_equal(registry_bind_uaid(reg, u, &s2, &prev), 0);
    assert_ptr_equal(prev, &s1);
    assert_ptr_equal(registry_find_uaid(reg, u), &s2);

    /* Binding again to the holder itself reports no previous holder. */
    prev = &prev;
    assert_int_equal(registry_bind_uaid(reg, u, &s2, &prev), 0);
    assert_null(prev);

    /* previous may be NULL. */
    assert_int_equal(registry_bind_uaid(reg, v, &s3, NULL), 0);
    assert_ptr_equal(registry_find_uaid(reg, v), &s3);

    /* The older socket closing must not unbind the newer one. */
    registry_unbind_uaid(reg, u, &s1);
    assert_ptr_equal(registry_find_uaid(reg, u), &s2);
    registry_unbind_uaid(reg, u, NULL);
    assert_ptr_equal(registry_find_uaid(reg, u), &s2);
    registry_unbind_uaid(reg, u, &s2);
    assert_null(registry_find_uaid(reg, u));
    registry_unbind_uaid(reg, u, &s2); /* not bound: no-op */
    assert_ptr_equal(registry_find_uaid(reg, v), &s3);

    /* A NULL session is refused and changes nothing. */
    prev = &prev;
    assert_int_equal(registry_bind_uaid(reg, v, NULL, &prev), -1);
    assert_null(prev);
    assert_ptr_equal(registry_find_uaid(reg, v), &s3);
    assert_int_equal(check_uaids(reg), 1);
    registry_free(reg);
}

/* Makes n uaids whose home slot in a table of 16 is home. */
static void colliding_uaids(const struct registry *reg, size_t home, uint8_t (*out)[IDS_BYTES],
                            size_t n, uint64_t *counter)
{
    while (n) {
        make_uaid(*out, ++*counter);
        if (reg_uaid_home(reg, *out, 15) == home) {
            out++;
            n--;
        }
    }
}

static void test_uaids_backward_shift(void **state)
{
    static const size_t orders[][8] = {
        {0, 1, 2, 3, 4, 5, 6, 7}, {7, 6, 5, 4, 3, 2, 1, 0}, {3, 0, 6, 1, 7, 2, 5, 4},
        {5, 4, 0, 1, 7, 6, 2, 3}, {1, 6, 2, 5, 3, 4, 0, 7},
    };
    static int sessions[8];
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        struct registry *reg = registry_new();
        uint8_t u[8][IDS_BYTES];
        uint64_t counter = 0;
        colliding_uaids(reg, 15, u, 4, &counter);
        colliding_uaids(reg, 0, u + 4, 2, &counter);
        colliding_uaids(reg, 1, u + 6, 2, &counter);
        for (size_t i = 0; i < 8; i++)
            assert_int_equal(registry_bind_uaid(reg, u[i], &sessions[i], NULL), 0);
        assert_int_equal(reg->uaids_mask + 1, 16);
        check_uaids(reg);
        for (size_t k = 0; k < 8; k++) {
            size_t gone = orders[o][k];
            registry_unbind_uaid(reg, u[gone], &sessions[gone]);
            check_uaids(reg);
            for (size_t m = 0; m < 8; m++) {
                bool removed = false;
                for (size_t r = 0; r <= k; r++)
                    removed = removed || orders[o][r] == m;
                if (removed)
                    assert_null(registry_find_uaid(reg, u[m]));
                else
                    assert_ptr_equal(registry_find_uaid(reg, u[m]), &sessions[m]);
            }
        }
        registry_free(reg);
    }
}

static void test_uaids_100k(void **state)
{
    enum { N = 100000 };
    struct registry *reg = registry_new();
    uint8_t u[IDS_BYTES];
    for (uint64_t i = 0; i < N; i++) {
        make_uaid(u, i);
        assert_int_equal(registry_bind_uaid(reg, u, conn_of(i), NULL), 0);
    }
    assert_int_equal(check_uaids(reg), N);
    for (uint64_t i = 0; i < N; i++) {
        make_uaid(u, i);
        assert_ptr_equal(registry_find_uaid(reg, u), conn_of(i));
    }
    for (uint64_t i = 0; i < N; i += 3) {
        make_uaid(u, i);
        registry_unbind_uaid(reg, u, conn_of(i));
    }
    check_uaids(reg);
    for (uint64_t i = 0; i < N; i++) {
        make_uaid(u, i);
        if (i % 3)
            assert_ptr_equal(registry_find_uaid(reg, u), conn_of(i));
        else
            assert_null(registry_find_uaid(reg, u));
    }
    for (uint64_t i = 0; i < N; i++) {
        make_uaid(u, i);
        registry_unbind_uaid(reg, u, conn_of(i));
    }
    assert_int_equal(check_uaids(reg), 0);
    assert_int_equal(reg->uaids_mask + 1, REG_MIN_CAP);
    registry_free(reg);
}

static void test_uaids_alloc_failure(void **state)
{
    struct registry *reg = registry_new();
    uint8_t u[IDS_BYTES];
    int s;
    for (uint64_t i = 0; i < 11; i++) {
        make_uaid(u, i);
        assert_int_equal(registry_bind_uaid(reg, u, &s, NULL), 0);
    }
    make_uaid(u, 11);
    void *prev = &prev;
    fail_calloc_after(1);
    assert_int_equal(registry_bind_uaid(reg, u, &s, &prev), -1);
    fail_calloc_after(0);
    assert_null(prev);
    assert_null(registry_find_uaid(reg, u));
    assert_int_equal(check_uaids(reg), 11);
    /* Rebinding an existing uaid needs no memory. */
    make_uaid(u, 3);
    fail_calloc_after(1);
    assert_int_equal(registry_bind_uaid(reg, u, &prev, NULL), 0);
    fail_calloc_after(0);
    assert_ptr_equal(registry_find_uaid(reg, u), &prev);
    registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vector),
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_next_id),
        cmocka_unit_test(test_add_errors),
        cmocka_unit_test(test_ids_100k),
        cmocka_unit_test(test_ids_backward_shift),
        cmocka_unit_test(test_ids_alloc_failure),
        cmocka_unit_test(test_bind_semantics),
        cmocka_unit_test(test_uaids_backward_shift),
        cmocka_unit_test(test_uaids_100k),
        cmocka_unit_test(test_uaids_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
