/*
 * timers: per-connection deadlines at O(1) cost, whatever the number of connections.
 *
 * A timing wheel of one-second slots driven by one libuv timer. Each connection embeds one
 * timers_node and arms it for its earliest deadline; when the deadline passes, the wheel's
 * callback runs with the node, and the owner re-arms it for its next deadline. Arming,
 * re-arming and cancelling are O(1); a tick costs the nodes due in that slot (plus nodes due
 * more than a wheel turn ahead, which are looked at once per turn). Times are whole seconds
 * of a monotonic clock (timers_now()). Loop thread only.
 *
 * A node armed for second "due" fires at the first tick at which timers_now() >= due: with
 * one-second resolution, that is between due - now - 1 and due - now seconds after arming
 * (plus the loop's latency); arm for now + n + 1 when at least n full seconds must pass. A
 * loop that was blocked catches up at its next tick: every node whose second has passed fires
 * then, once. The wheel's libuv timer is unreferenced: it does not keep the loop alive by
 * itself (the connections whose deadlines it tracks do).
 *
 * The fire callback may arm, re-arm or cancel any node, the fired one included, and may
 * close the wheel; a node armed during a tick for a second that has already come fires at
 * the next tick, never twice in one tick.
 */
#ifndef SIMPLEPUSHD_TIMERS_H
#define SIMPLEPUSHD_TIMERS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct timers_node {
    struct timers_node *next, *prev; /* NULL when not armed */
    uint32_t due;                    /* seconds, timers_now() scale */
};

struct timers;
typedef void (*timers_fire_cb)(struct timers_node *node, void *arg);

/*
 * Starts a wheel on loop; fire(node, arg) runs for each node whose time has come. Returns NULL
 * on allocation failure.
 */
struct timers *timers_new(uv_loop_t *loop, timers_fire_cb fire, void *arg);

/*
 * Stops the wheel and frees it once libuv has closed its handle. Armed nodes are dropped:
 * they are disarmed at once (timers_armed() turns false), so they must still be valid memory
 * when this is called. After this call, timers_arm() leaves nodes disarmed. Accepts NULL.
 */
void timers_close(struct timers *t);

/* Seconds since the wheel started (monotonic; starts at 1 so that 0 can mean "never"). */
uint32_t timers_now(const struct timers *t);

/* Arms (or re-arms) node to fire at second "due"; a due in the past fires at the next tick. */
void timers_arm(struct timers *t, struct timers_node *node, uint32_t due);

/* Disarms node; no-op when it is not armed. t is not touched when node is not armed. */
void timers_cancel(struct timers *t, struct timers_node *node);

/*
 * Test hooks. timers_set_clock() replaces the clock (milliseconds of a monotonic clock; NULL
 * restores uv_now()) and restarts the wheel's seconds at 1; call it right after timers_new(),
 * before arming anything. timers_tick() runs one tick now, as the libuv timer does every
 * second.
 */
typedef uint64_t (*timers_clock_fn)(void *arg);
void timers_set_clock(struct timers *t, timers_clock_fn now_ms, void *arg);
void timers_tick(struct timers *t);

/* True when node is armed. */
static inline bool timers_armed(const struct timers_node *node)
{
    return node->prev != 0;
}

#endif
